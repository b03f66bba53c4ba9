output "primary_endpoint" {
  value = module.primary.db_instance_endpoint
}

output "replica_endpoint" {
  value = module.replica.db_instance_endpoint
}

output "master_user_secret_arn" {
  value = module.primary.db_instance_master_user_secret_arn
}
