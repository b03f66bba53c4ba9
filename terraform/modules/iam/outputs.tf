output "workload_role_arn" {
  value = module.dmb_workload.iam_role_arn
}

output "external_secrets_role_arn" {
  value = module.external_secrets.iam_role_arn
}
