output "primary_endpoint" {
  value = module.redis.replication_group_primary_endpoint_address
}

output "auth_token" {
  value     = random_password.auth.result
  sensitive = true
}
