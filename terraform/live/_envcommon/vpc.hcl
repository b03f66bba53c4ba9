locals {
  env = read_terragrunt_config(find_in_parent_folders("env.hcl")).locals
}

terraform {
  source = "${get_repo_root()}/terraform/modules/vpc"
}

inputs = {
  cidr               = local.env.vpc_cidr
  azs                = local.env.azs
  single_nat_gateway = local.env.single_nat_gateway
}
