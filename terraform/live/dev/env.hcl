# dev: small and cheap. Only sizes and counts differ from prod.
locals {
  environment = "dev"
  account_id  = "000000000000"
  region      = "eu-west-1"
  azs         = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  vpc_cidr    = "10.10.0.0/16"

  single_nat_gateway        = true
  node_instance_types       = ["m6i.xlarge"]
  node_min                  = 2
  node_max                  = 6
  db_instance_class         = "db.t4g.medium"
  db_replica_instance_class = "db.t4g.medium"
  db_storage_gb             = 50
  db_multi_az               = false
  redis_node_type           = "cache.t4g.small"
  redis_replicas            = 1
  kafka_brokers             = 3
  kafka_instance_type       = "kafka.t3.small"
  kafka_volume_gb           = 50
}
