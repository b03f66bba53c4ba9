# One IAM role per workload, assumed through IRSA: the dmb pods (read their secrets, use MSK)
# and External Secrets (read the dmb secrets to sync them).
data "aws_caller_identity" "current" {}

locals {
  secrets_arn = "arn:aws:secretsmanager:${var.region}:${data.aws_caller_identity.current.account_id}:secret:dmb/${var.environment}/*"
}

module "dmb_workload" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.48"

  role_name = "dmb-${var.environment}-workload"
  oidc_providers = {
    main = {
      provider_arn               = var.oidc_provider_arn
      namespace_service_accounts = ["dmb-${var.environment}:dmb"]
    }
  }
  role_policy_arns = { msk = aws_iam_policy.msk.arn }
}

module "external_secrets" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.48"

  role_name                             = "dmb-${var.environment}-external-secrets"
  attach_external_secrets_policy        = true
  external_secrets_secrets_manager_arns = [local.secrets_arn]
  oidc_providers = {
    main = {
      provider_arn               = var.oidc_provider_arn
      namespace_service_accounts = ["external-secrets:external-secrets"]
    }
  }
}

resource "aws_iam_policy" "msk" {
  name_prefix = "dmb-${var.environment}-msk-"
  description = "Produce and consume the dmb CDC topics"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect = "Allow"
      Action = [
        "kafka-cluster:Connect",
        "kafka-cluster:DescribeTopic",
        "kafka-cluster:CreateTopic",
        "kafka-cluster:WriteData",
        "kafka-cluster:ReadData",
        "kafka-cluster:AlterGroup",
        "kafka-cluster:DescribeGroup",
      ]
      Resource = [var.msk_cluster_arn, "${replace(var.msk_cluster_arn, ":cluster/", ":topic/")}/*", "${replace(var.msk_cluster_arn, ":cluster/", ":group/")}/*"]
    }]
  })
}
