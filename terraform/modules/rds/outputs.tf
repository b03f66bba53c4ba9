output "primary_address" {
  value = module.primary.db_instance_address
}

output "replica_address" {
  value = module.replica.db_instance_address
}

output "port" {
  value = module.primary.db_instance_port
}

output "database" {
  value = "dmb"
}

output "username" {
  value = "dmb"
}

output "password" {
  value     = random_password.master.result
  sensitive = true
}
