locals {
  env = read_terragrunt_config(find_in_parent_folders("env.hcl")).locals
}

terraform {
  source = "${get_repo_root()}/terraform/modules/rds"
}

dependency "vpc" {
  config_path                             = "../vpc"
  mock_outputs                            = { vpc_id = "vpc-00000000", infra_subnet_ids = ["subnet-d", "subnet-e", "subnet-f"] }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

dependency "eks" {
  config_path                             = "../eks"
  mock_outputs                            = { node_security_group_id = "sg-00000000" }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

inputs = {
  engine_version           = "16.6"
  instance_class           = local.env.db_instance_class
  replica_instance_class   = local.env.db_replica_instance_class
  storage_gb               = local.env.db_storage_gb
  multi_az                 = local.env.db_multi_az
  vpc_id                   = dependency.vpc.outputs.vpc_id
  subnet_ids               = dependency.vpc.outputs.infra_subnet_ids
  client_security_group_id = dependency.eks.outputs.node_security_group_id
}
