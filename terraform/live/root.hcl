# Root Terragrunt configuration: remote state, the AWS provider and tags for every module.
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
    bucket         = "dmb-terraform-state-${local.env.account_id}"
    key            = "${path_relative_to_include()}/terraform.tfstate"
    region         = local.env.region
    encrypt        = true
    dynamodb_table = "dmb-terraform-locks"
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
