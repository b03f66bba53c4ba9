output "bootstrap_brokers" {
  description = "PLAINTEXT bootstrap servers (host:9092,...), what DMB_KAFKA_BOOTSTRAP takes."
  value       = module.msk.bootstrap_brokers_plaintext
}

output "bootstrap_brokers_iam" {
  value = module.msk.bootstrap_brokers_sasl_iam
}

output "cluster_arn" {
  value = module.msk.arn
}
