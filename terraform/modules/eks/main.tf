# EKS with managed node groups, OIDC for IRSA, and the cluster autoscaler's IAM role.
module "eks" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.31"

  cluster_name                   = var.name
  cluster_version                = var.kubernetes_version
  vpc_id                         = var.vpc_id
  subnet_ids                     = var.subnet_ids
  enable_irsa                    = true
  cluster_endpoint_public_access = var.public_endpoint

  enable_cluster_creator_admin_permissions = true

  eks_managed_node_groups = {
    # Add-ons (operators, ingress, monitoring, Argo CD), kept apart from Ray's pods.
    system = {
      instance_types = ["m6i.large"]
      min_size       = 2
      max_size       = 3
      desired_size   = 2
      labels         = { workload = "system" }
    }
    # Ray head and workers; Ray's autoscaler asks for pods, the cluster autoscaler adds nodes.
    ray = {
      instance_types = var.node_instance_types
      min_size       = var.node_min
      max_size       = var.node_max
      desired_size   = var.node_min
      labels         = { workload = "ray" }
      tags = {
        "k8s.io/cluster-autoscaler/enabled"     = "true"
        "k8s.io/cluster-autoscaler/${var.name}" = "owned"
      }
    }
  }
}

module "cluster_autoscaler_irsa" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.48"

  role_name                        = "${var.name}-cluster-autoscaler"
  attach_cluster_autoscaler_policy = true
  cluster_autoscaler_cluster_names = [module.eks.cluster_name]
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:cluster-autoscaler"]
    }
  }
}
