# Kafka (MSK) for the CDC topics, in the infra subnets, reachable from the EKS nodes only.
# dmb's Kafka clients (dmb/stores/kafka.py) speak PLAINTEXT today, so brokers accept PLAINTEXT on
# 9092 beside TLS + IAM on 9098; broker-to-broker traffic and storage are encrypted. Turning
# PLAINTEXT off is one line here once the clients use TLS (docs/INFRA.md).
module "msk" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/msk-kafka-cluster/aws"
  version = "~> 2.11"

  name                        = var.name
  kafka_version               = "3.7.x"
  number_of_broker_nodes      = var.brokers
  broker_node_client_subnets  = var.subnet_ids
  broker_node_instance_type   = var.instance_type
  broker_node_security_groups = [aws_security_group.kafka.id]
  broker_node_storage_info = {
    ebs_storage_info = { volume_size = var.volume_gb }
  }
  encryption_in_transit_client_broker = "TLS_PLAINTEXT"
  encryption_in_transit_in_cluster    = true
  client_authentication = {
    unauthenticated = true
    sasl            = { iam = true }
  }
  configuration_name = "${var.name}-config"
  configuration_server_properties = {
    "auto.create.topics.enable"  = true
    "default.replication.factor" = min(3, var.brokers)
    "min.insync.replicas"        = max(1, min(3, var.brokers) - 1)
    "num.partitions"             = 12
  }
}

resource "aws_security_group" "kafka" {
  # checkov:skip=CKV2_AWS_5:attached through the community module inputs, which checkov does not download
  name_prefix = "${var.name}-kafka-"
  description = "Kafka from the EKS nodes only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "Kafka PLAINTEXT from EKS nodes (in-VPC only)"
    from_port       = 9092
    to_port         = 9092
    protocol        = "tcp"
    security_groups = [var.client_security_group_id]
  }

  ingress {
    description     = "Kafka TLS + IAM auth from EKS nodes"
    from_port       = 9098
    to_port         = 9098
    protocol        = "tcp"
    security_groups = [var.client_security_group_id]
  }
}
