variable "name" {
  type = string
}

variable "kubernetes_version" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "public_endpoint" {
  type        = bool
  description = "Expose the API endpoint publicly (restrict with CIDRs in real use)."
}

variable "node_instance_types" {
  type = list(string)
}

variable "node_min" {
  type = number
}

variable "node_max" {
  type = number
}
