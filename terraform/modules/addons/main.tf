# Cluster add-ons from their Helm charts: KubeRay operator (CRDs come through Argo CD with
# server-side apply), External Secrets, cert-manager, ingress-nginx and the cluster autoscaler.
resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = "1.7.0"
  namespace        = "kuberay"
  create_namespace = true
  skip_crds        = true
}

resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = "https://charts.external-secrets.io"
  chart            = "external-secrets"
  version          = "0.14.4"
  namespace        = "external-secrets"
  create_namespace = true
  values = [yamlencode({
    serviceAccount = { annotations = { "eks.amazonaws.com/role-arn" = var.external_secrets_role_arn } }
  })]
}

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = "v1.16.3"
  namespace        = "cert-manager"
  create_namespace = true
  values           = [yamlencode({ crds = { enabled = true } })]
}

resource "helm_release" "ingress_nginx" {
  name             = "ingress-nginx"
  repository       = "https://kubernetes.github.io/ingress-nginx"
  chart            = "ingress-nginx"
  version          = "4.12.0"
  namespace        = "ingress-nginx"
  create_namespace = true
}

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = "9.45.0"
  namespace  = "kube-system"
  values = [yamlencode({
    autoDiscovery = { clusterName = var.cluster_name }
    awsRegion     = var.region
    rbac = { serviceAccount = {
      name        = "cluster-autoscaler"
      annotations = { "eks.amazonaws.com/role-arn" = var.cluster_autoscaler_role_arn }
    } }
  })]
}
