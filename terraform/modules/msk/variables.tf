variable "name" {
  type = string
}

variable "brokers" {
  type = number
}

variable "instance_type" {
  type = string
}

variable "volume_gb" {
  type = number
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "client_security_group_id" {
  type = string
}
