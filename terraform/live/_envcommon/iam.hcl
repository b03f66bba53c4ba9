terraform {
  source = "${get_repo_root()}/terraform/modules/iam"
}

dependency "eks" {
  config_path                             = "../eks"
  mock_outputs                            = { oidc_provider_arn = "arn:aws:iam::000000000000:oidc-provider/mock" }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

dependency "msk" {
  config_path                             = "../msk"
  mock_outputs                            = { cluster_arn = "arn:aws:kafka:eu-west-1:000000000000:cluster/mock/0" }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

inputs = {
  oidc_provider_arn = dependency.eks.outputs.oidc_provider_arn
  msk_cluster_arn   = dependency.msk.outputs.cluster_arn
}
