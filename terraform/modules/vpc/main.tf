# Three subnet tiers over three AZs: public (load balancers, NAT), private (EKS nodes) and
# infra (RDS, ElastiCache, MSK: no route to the internet at all).
module "vpc" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.16"

  name            = var.name
  cidr            = var.cidr
  azs             = var.azs
  public_subnets  = [for i, _ in var.azs : cidrsubnet(var.cidr, 8, i)]
  private_subnets = [for i, _ in var.azs : cidrsubnet(var.cidr, 4, i + 1)]
  intra_subnets   = [for i, _ in var.azs : cidrsubnet(var.cidr, 8, i + 100)]

  enable_nat_gateway     = true
  single_nat_gateway     = var.single_nat_gateway
  one_nat_gateway_per_az = !var.single_nat_gateway
  enable_dns_hostnames   = true

  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1, "karpenter.sh/discovery" = var.name }
}
