variable "name" {
  type        = string
  description = "Name prefix of the VPC and its subnets."
}

variable "cidr" {
  type        = string
  description = "VPC CIDR block."
}

variable "azs" {
  type        = list(string)
  description = "Exactly three availability zones."
  validation {
    condition     = length(var.azs) == 3
    error_message = "Use three availability zones."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all AZs (cheaper, for dev) instead of one per AZ."
}
