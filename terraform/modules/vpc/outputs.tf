output "vpc_id" {
  value = module.vpc.vpc_id
}

output "private_subnet_ids" {
  value = module.vpc.private_subnets
}

output "infra_subnet_ids" {
  value = module.vpc.intra_subnets
}

output "vpc_cidr" {
  value = module.vpc.vpc_cidr_block
}
