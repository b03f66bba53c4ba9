variable "name" {
  type = string
}

variable "node_type" {
  type = string
}

variable "replicas" {
  type        = number
  description = "Read replicas beside the primary."
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
