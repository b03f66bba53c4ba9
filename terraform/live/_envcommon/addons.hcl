terraform {
  source = "${get_repo_root()}/terraform/modules/addons"
}

dependency "eks" {
  config_path = "../eks"
  mock_outputs = {
    cluster_name                       = "mock"
    cluster_endpoint                   = "https://mock"
    cluster_certificate_authority_data = "bW9jaw=="
    cluster_autoscaler_role_arn        = "arn:aws:iam::000000000000:role/mock"
  }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

dependency "iam" {
  config_path                             = "../iam"
  mock_outputs                            = { external_secrets_role_arn = "arn:aws:iam::000000000000:role/mock" }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

generate "helm_provider" {
  path      = "helm_provider.tf"
  if_exists = "overwrite_terragrunt"
  contents  = <<-EOT
    provider "helm" {
      kubernetes {
        host                   = "${dependency.eks.outputs.cluster_endpoint}"
        cluster_ca_certificate = base64decode("${dependency.eks.outputs.cluster_certificate_authority_data}")
        exec {
          api_version = "client.authentication.k8s.io/v1beta1"
          command     = "aws"
          args        = ["eks", "get-token", "--cluster-name", "${dependency.eks.outputs.cluster_name}"]
        }
      }
    }
  EOT
}

inputs = {
  acme_email                  = "platform@example.com"
  cluster_name                = dependency.eks.outputs.cluster_name
  external_secrets_role_arn   = dependency.iam.outputs.external_secrets_role_arn
  cluster_autoscaler_role_arn = dependency.eks.outputs.cluster_autoscaler_role_arn
}
