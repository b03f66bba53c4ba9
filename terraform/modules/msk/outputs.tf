output "bootstrap_brokers_iam" {
  value = module.msk.bootstrap_brokers_sasl_iam
}

output "cluster_arn" {
  value = module.msk.arn
}
