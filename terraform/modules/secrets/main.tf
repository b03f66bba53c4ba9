# The Secrets Manager entries External Secrets syncs into the dmb namespace (dmb-secrets), under
# dmb/<environment>/ (the prefix the IAM roles are limited to). Store URLs are composed here from
# the rds, elasticache and msk outputs. The JWT secret is created empty: its keys are generated
# and rotated by an operator (docs/OPERATIONS.md), so they never enter the Terraform state.
locals {
  prefix   = "dmb/${var.environment}"
  database = "${var.db_username}:${urlencode(var.db_password)}"
}

resource "aws_secretsmanager_secret" "this" {
  # checkov:skip=CKV2_AWS_57:store credentials rotate through Terraform (docs/OPERATIONS.md), the JWT key by hand
  for_each                = toset(["database", "redis", "kafka", "jwt"])
  name                    = "${local.prefix}/${each.key}"
  description             = "dmb ${var.environment}: ${each.key} settings for External Secrets"
  kms_key_id              = var.kms_key_id
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "database" {
  secret_id = aws_secretsmanager_secret.this["database"].id
  secret_string = jsonencode({
    primary_url = "postgresql://${local.database}@${var.db_primary_address}:${var.db_port}/${var.db_name}?sslmode=require"
    replica_url = "postgresql://${local.database}@${var.db_replica_address}:${var.db_port}/${var.db_name}?sslmode=require"
  })
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id = aws_secretsmanager_secret.this["redis"].id
  secret_string = jsonencode({
    url = "rediss://:${urlencode(var.redis_auth_token)}@${var.redis_primary_endpoint}:6379/0"
  })
}

resource "aws_secretsmanager_secret_version" "kafka" {
  secret_id     = aws_secretsmanager_secret.this["kafka"].id
  secret_string = jsonencode({ bootstrap = var.kafka_bootstrap_brokers })
}
