# PostgreSQL primary and a streaming read replica. The parameter group turns on logical
# replication for CDC (docs/CDC.md): rds.logical_replication=1 sets wal_level=logical.
# The master password is generated here (kept in the encrypted state) so the secrets module can
# compose DMB_DATABASE_URL; rotate it with `terragrunt apply -replace=random_password.master`.
resource "random_password" "master" {
  length  = 40
  special = false
}

locals {
  cdc_parameters = [
    { name = "rds.logical_replication", value = "1", apply_method = "pending-reboot" },
    { name = "max_replication_slots", value = "10", apply_method = "pending-reboot" },
    { name = "max_wal_senders", value = "20", apply_method = "pending-reboot" },
    { name = "max_slot_wal_keep_size", value = "10240", apply_method = "immediate" },
    { name = "rds.force_ssl", value = "1", apply_method = "immediate" },
  ]
}

module "primary" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/rds/aws"
  version = "~> 6.10"

  identifier                          = "${var.name}-primary"
  engine                              = "postgres"
  engine_version                      = var.engine_version
  family                              = "postgres16"
  major_engine_version                = "16"
  instance_class                      = var.instance_class
  allocated_storage                   = var.storage_gb
  max_allocated_storage               = var.storage_gb * 4
  db_name                             = "dmb"
  username                            = "dmb"
  manage_master_user_password         = false
  password                            = random_password.master.result
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  enabled_cloudwatch_logs_exports     = ["postgresql"]
  multi_az                            = var.multi_az
  db_subnet_group_name                = var.db_subnet_group_name
  create_db_subnet_group              = var.db_subnet_group_name == null
  subnet_ids                          = var.subnet_ids
  vpc_security_group_ids              = [aws_security_group.postgres.id]
  storage_encrypted                   = true
  backup_retention_period             = 7
  deletion_protection                 = true
  parameters                          = local.cdc_parameters
}

module "replica" {
  # checkov:skip=CKV_TF_1:registry modules are pinned by version range and the lock file
  source  = "terraform-aws-modules/rds/aws"
  version = "~> 6.10"

  identifier             = "${var.name}-replica"
  replicate_source_db    = module.primary.db_instance_identifier
  engine                 = "postgres"
  engine_version         = var.engine_version
  family                 = "postgres16"
  major_engine_version   = "16"
  instance_class         = var.replica_instance_class
  vpc_security_group_ids = [aws_security_group.postgres.id]
  storage_encrypted      = true
  create_db_subnet_group = false
  parameters             = local.cdc_parameters
  # A replica's credentials are the primary's.
  manage_master_user_password = false
  skip_final_snapshot         = true
  deletion_protection         = true
}

resource "aws_security_group" "postgres" {
  # checkov:skip=CKV2_AWS_5:attached through the community module inputs, which checkov does not download
  name_prefix = "${var.name}-postgres-"
  description = "PostgreSQL from the EKS nodes only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "PostgreSQL from EKS nodes"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [var.client_security_group_id]
  }
}
