# prod: sized for load. Only sizes and counts differ from dev.
locals {
  environment = "prod"
  account_id  = "111111111111"
  region      = "eu-west-1"
  azs         = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  vpc_cidr    = "10.20.0.0/16"

  single_nat_gateway        = false
  node_instance_types       = ["m6i.2xlarge"]
  node_min                  = 3
  node_max                  = 30
  db_instance_class         = "db.r6g.xlarge"
  db_replica_instance_class = "db.r6g.xlarge"
  db_storage_gb             = 500
  db_multi_az               = true
  redis_node_type           = "cache.r6g.large"
  redis_replicas            = 2
  kafka_brokers             = 3
  kafka_instance_type       = "kafka.m5.large"
  kafka_volume_gb           = 1000
}
