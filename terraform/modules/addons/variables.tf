variable "cluster_name" {
  type = string
}

variable "region" {
  type = string
}

variable "external_secrets_role_arn" {
  type = string
}

variable "cluster_autoscaler_role_arn" {
  type = string
}
