# Cluster add-ons from their Helm charts: KubeRay operator (its CRDs come through Argo CD with
# server-side apply), External Secrets, cert-manager (with the letsencrypt ClusterIssuer the
# Ingress names), ingress-nginx, the cluster autoscaler, the Prometheus operator with Grafana
# (PodMonitor and the dmb dashboard), and Argo CD itself.
resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = "1.7.0"
  namespace        = "kuberay"
  create_namespace = true
  skip_crds        = true
}

resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = "https://charts.external-secrets.io"
  chart            = "external-secrets"
  version          = "0.18.2"
  namespace        = "external-secrets"
  create_namespace = true
  values = [yamlencode({
    serviceAccount = {
      name        = "external-secrets"
      annotations = { "eks.amazonaws.com/role-arn" = var.external_secrets_role_arn }
    }
  })]
}

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = "v1.16.3"
  namespace        = "cert-manager"
  create_namespace = true
  values = [yamlencode({
    crds = { enabled = true }
    extraObjects = [yamlencode({
      apiVersion = "cert-manager.io/v1"
      kind       = "ClusterIssuer"
      metadata   = { name = "letsencrypt" }
      spec = { acme = {
        server              = "https://acme-v02.api.letsencrypt.org/directory"
        email               = var.acme_email
        privateKeySecretRef = { name = "letsencrypt-account" }
        solvers             = [{ http01 = { ingress = { ingressClassName = "nginx" } } }]
      } }
    })]
  })]
}

resource "helm_release" "ingress_nginx" {
  name             = "ingress-nginx"
  repository       = "https://kubernetes.github.io/ingress-nginx"
  chart            = "ingress-nginx"
  version          = "4.12.0"
  namespace        = "ingress-nginx"
  create_namespace = true
  # The per-IP rate limit needs the client's address. The NLB's instance targets keep it only
  # with externalTrafficPolicy Local (Cluster SNATs every request to a node's address: one
  # bucket per node). nginx then replaces any X-Forwarded-For a client sends with the one
  # address it saw (use-forwarded-headers false), so the gateway, with
  # DMB_TRUSTED_PROXY_HOPS=1 (cluster/base/kustomization.yaml), reads exactly that entry.
  values = [yamlencode({
    controller = {
      service = {
        externalTrafficPolicy = "Local"
        annotations = {
          "service.beta.kubernetes.io/aws-load-balancer-type"   = "nlb"
          "service.beta.kubernetes.io/aws-load-balancer-scheme" = "internet-facing"
        }
      }
      config = {
        "use-forwarded-headers"      = "false"
        "compute-full-forwarded-for" = "false"
      }
    }
  })]
}

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = "9.45.0"
  namespace  = "kube-system"
  values = [yamlencode({
    autoDiscovery = { clusterName = var.cluster_name }
    awsRegion     = var.region
    rbac = { serviceAccount = {
      name        = "cluster-autoscaler"
      annotations = { "eks.amazonaws.com/role-arn" = var.cluster_autoscaler_role_arn }
    } }
  })]
}

resource "helm_release" "monitoring" {
  name             = "kube-prometheus-stack"
  repository       = "https://prometheus-community.github.io/helm-charts"
  chart            = "kube-prometheus-stack"
  version          = "69.8.2"
  namespace        = "monitoring"
  create_namespace = true
  values = [yamlencode({
    prometheus = { prometheusSpec = {
      # PodMonitors labelled release=prometheus, in any namespace (cluster/base/podmonitor.yaml)
      podMonitorSelector          = { matchLabels = { release = "prometheus" } }
      podMonitorNamespaceSelector = {}
    } }
    grafana = { sidecar = { dashboards = { enabled = true, label = "grafana_dashboard", searchNamespace = "ALL" } } }
  })]
}

resource "helm_release" "argocd" {
  name             = "argo-cd"
  repository       = "https://argoproj.github.io/argo-helm"
  chart            = "argo-cd"
  version          = "7.8.2"
  namespace        = "argocd"
  create_namespace = true
}
