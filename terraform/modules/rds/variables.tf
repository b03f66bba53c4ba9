variable "name" {
  type = string
}

variable "engine_version" {
  type = string
}

variable "instance_class" {
  type = string
}

variable "replica_instance_class" {
  type = string
}

variable "storage_gb" {
  type = number
}

variable "multi_az" {
  type = bool
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "db_subnet_group_name" {
  type    = string
  default = null
}

variable "client_security_group_id" {
  type = string
}
