variable "environment" {
  type = string
}

variable "region" {
  type = string
}

variable "oidc_provider_arn" {
  type = string
}

variable "msk_cluster_arn" {
  type = string
}
