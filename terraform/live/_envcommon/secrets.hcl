terraform {
  source = "${get_repo_root()}/terraform/modules/secrets"
}

dependency "rds" {
  config_path = "../rds"
  mock_outputs = {
    primary_address = "primary.mock"
    replica_address = "replica.mock"
    port            = 5432
    database        = "dmb"
    username        = "dmb"
    password        = "mock"
  }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

dependency "elasticache" {
  config_path                             = "../elasticache"
  mock_outputs                            = { primary_endpoint = "redis.mock", auth_token = "mock" }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

dependency "msk" {
  config_path                             = "../msk"
  mock_outputs                            = { bootstrap_brokers = "b-1.mock:9092" }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

inputs = {
  db_primary_address      = dependency.rds.outputs.primary_address
  db_replica_address      = dependency.rds.outputs.replica_address
  db_port                 = dependency.rds.outputs.port
  db_name                 = dependency.rds.outputs.database
  db_username             = dependency.rds.outputs.username
  db_password             = dependency.rds.outputs.password
  redis_primary_endpoint  = dependency.elasticache.outputs.primary_endpoint
  redis_auth_token        = dependency.elasticache.outputs.auth_token
  kafka_bootstrap_brokers = dependency.msk.outputs.bootstrap_brokers
}
