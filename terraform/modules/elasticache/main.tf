# Redis replication group: TLS in transit, an AUTH token, encryption at rest, automatic failover.
resource "random_password" "auth" {
  length  = 48
  special = false
}

module "redis" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/elasticache/aws"
  version = "~> 1.4"

  replication_group_id       = var.name
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.node_type
  num_cache_clusters         = var.replicas + 1
  automatic_failover_enabled = var.replicas > 0
  multi_az_enabled           = var.replicas > 0
  transit_encryption_enabled = true
  auth_token                 = random_password.auth.result
  at_rest_encryption_enabled = true
  vpc_id                     = var.vpc_id
  subnet_ids                 = var.subnet_ids
  create_parameter_group     = true
  parameter_group_family     = "redis7"
  # Evict only keys with a TTL (every cache key has one; the counters' dirty sets do not and
  # must stay). Why, and what happens at the limit: docs/OPERATIONS.md, "Redis memory policy".
  parameters = [{ name = "maxmemory-policy", value = "volatile-lru" }]
  security_group_rules = {
    from_nodes = {
      type                         = "ingress"
      from_port                    = 6379
      to_port                      = 6379
      referenced_security_group_id = var.client_security_group_id
      description                  = "Redis from EKS nodes"
    }
  }
}
