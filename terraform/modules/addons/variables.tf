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

variable "acme_email" {
  type        = string
  description = "Contact address for the Let's Encrypt account of the letsencrypt ClusterIssuer."
}
