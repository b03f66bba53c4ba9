variable "environment" {
  type = string
}

variable "kms_key_id" {
  type        = string
  description = "KMS key for the secrets (null: the account's aws/secretsmanager key)."
  default     = null
}

variable "db_primary_address" {
  type = string
}

variable "db_replica_address" {
  type = string
}

variable "db_port" {
  type = number
}

variable "db_name" {
  type = string
}

variable "db_username" {
  type = string
}

variable "db_password" {
  type      = string
  sensitive = true
}

variable "redis_primary_endpoint" {
  type = string
}

variable "redis_auth_token" {
  type      = string
  sensitive = true
}

variable "kafka_bootstrap_brokers" {
  type = string
}
