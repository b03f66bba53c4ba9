# Root Terragrunt configuration, included by every unit of live/dev and live/prod: remote state
# (one S3 bucket per account, one key per unit), the AWS provider pinned to the environment's
# account and region, and the tags every resource carries. Environments differ only in env.hcl.
locals {
  env = read_terragrunt_config(find_in_parent_folders("env.hcl")).locals
}

remote_state {
  backend = "s3"
  generate = {
    path      = "backend.tf"
    if_exists = "overwrite_terragrunt"
  }
  config = {
    bucket       = "dmb-terraform-state-${local.env.account_id}"
    key          = "${path_relative_to_include()}/terraform.tfstate"
    region       = local.env.region
    encrypt      = true
    use_lockfile = true # S3-native state locking (Terraform >= 1.10): no DynamoDB table
  }
}

generate "provider" {
  path      = "provider.tf"
  if_exists = "overwrite_terragrunt"
  contents  = <<-EOT
    provider "aws" {
      region              = "${local.env.region}"
      allowed_account_ids = ["${local.env.account_id}"]
      default_tags {
        tags = {
          project     = "dmb"
          environment = "${local.env.environment}"
          managed-by  = "terragrunt"
        }
      }
    }
  EOT
}

inputs = {
  name        = "dmb-${local.env.environment}"
  environment = local.env.environment
  region      = local.env.region
}
