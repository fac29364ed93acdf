#!/usr/bin/env bash
# Deploys the tenant onboarding worker to Azure: the Bicep templates (infra/main.bicep, and
# infra/servicebus-tenant.bicep when Service Bus lives in another Entra tenant), then the worker's
# Kubernetes objects (k8s/base plus a generated overlay carrying the deployment's ids).
# docs/deploy.md walks through it. Nothing here handles a key or a connection string.
set -euo pipefail
# Failures inside $(...) abort too.
shopt -s inherit_errexit

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${ONBOARD_STATE_DIR:-$root/.local/deploy}

usage() {
  cat >&2 <<'EOF'
usage: infra/deploy.sh [--what-if] STEP

STEP
  all                 servicebus-tenant (if configured), azure, then k8s
  servicebus-tenant   infra/servicebus-tenant.bicep into the Service Bus Entra tenant
  azure               infra/main.bicep into the cluster's Entra tenant
  k8s                 AKS credentials, then kubectl apply -k of the worker's manifests
  destroy             remove the worker's Kubernetes objects, role assignments, custom roles
                      and (with ONBOARD_DELETE_RESOURCE_GROUPS=yes) its resource groups

--what-if             show what would change (az deployment group what-if, kubectl diff);
                      change nothing

Environment (required)
  ONBOARD_RESOURCE_GROUP           resource group of the worker's identity, storage and (same
                                   tenant) Service Bus; created in ONBOARD_LOCATION if missing
  ONBOARD_LOCATION                 Azure region, e.g. westeurope
  ONBOARD_AKS_NAME                 existing AKS cluster (OIDC issuer + workload identity on)
  ONBOARD_IMAGE                    worker image, e.g. myacr.azurecr.io/onboarding-worker:0.1.0
                                   (k8s, all)
Environment (optional)
  ONBOARD_SUBSCRIPTION             subscription of the above (default: az account show)
  ONBOARD_AKS_RESOURCE_GROUP       default: ONBOARD_RESOURCE_GROUP
  ONBOARD_TENANTS_RESOURCE_GROUP   where tenant identities go (default: <resource group>-tenants)
  ONBOARD_PREFIX                   resource name prefix, 2-10 lowercase letters/digits (onboard)
  ONBOARD_KEDA_SUBJECT             KEDA operator service account (default AKS add-on:
                                   system:serviceaccount:kube-system:keda-operator)
Service Bus in another Entra tenant (set all three to switch to it)
  ONBOARD_SERVICEBUS_TENANT_ID     that Entra tenant (az login --tenant it first)
  ONBOARD_SERVICEBUS_SUBSCRIPTION  a subscription in that tenant
  ONBOARD_SERVICEBUS_RESOURCE_GROUP  resource group there (created if missing)
  ONBOARD_SERVICEBUS_LOCATION      default: ONBOARD_LOCATION
EOF
  exit 2
}

die() {
  echo "deploy: $*" >&2
  exit 1
}

what_if=false
if [ "${1:-}" = "--what-if" ]; then
  what_if=true
  shift
fi
[ $# -eq 1 ] || usage
step=$1
case "$step" in
  all | servicebus-tenant | azure | k8s | destroy) ;;
  -h | --help) usage ;;
  *) echo "deploy: unknown step '$step'" >&2; usage ;;
esac

missing=()
for var in ONBOARD_RESOURCE_GROUP ONBOARD_LOCATION ONBOARD_AKS_NAME; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
if { [ "$step" = k8s ] || [ "$step" = all ]; } && [ -z "${ONBOARD_IMAGE:-}" ]; then
  missing+=(ONBOARD_IMAGE)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy: set ${missing[*]}" >&2
  usage
fi

rg=$ONBOARD_RESOURCE_GROUP
location=$ONBOARD_LOCATION
aks=$ONBOARD_AKS_NAME
aks_rg=${ONBOARD_AKS_RESOURCE_GROUP:-$rg}
tenants_rg=${ONBOARD_TENANTS_RESOURCE_GROUP:-$rg-tenants}
prefix=${ONBOARD_PREFIX:-onboard}
keda_subject=${ONBOARD_KEDA_SUBJECT:-system:serviceaccount:kube-system:keda-operator}
namespace="tenant-onboarding"
service_account="onboarding-worker"
main_deployment="onboard-main"
sb_deployment="onboard-servicebus"

[[ "$prefix" =~ ^[a-z][a-z0-9]{1,9}$ ]] || die "ONBOARD_PREFIX must be 2-10 lowercase letters and digits, starting with a letter (got '$prefix')"

remote_sb=false
if [ -n "${ONBOARD_SERVICEBUS_TENANT_ID:-}${ONBOARD_SERVICEBUS_SUBSCRIPTION:-}${ONBOARD_SERVICEBUS_RESOURCE_GROUP:-}" ]; then
  for var in ONBOARD_SERVICEBUS_TENANT_ID ONBOARD_SERVICEBUS_SUBSCRIPTION ONBOARD_SERVICEBUS_RESOURCE_GROUP; do
    [ -n "${!var:-}" ] || die "Service Bus in another tenant needs ONBOARD_SERVICEBUS_TENANT_ID, _SUBSCRIPTION and _RESOURCE_GROUP; $var is empty"
  done
  remote_sb=true
fi

command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
subscription=${ONBOARD_SUBSCRIPTION:-$(az account show --query id -o tsv)} ||
  die "not logged in: run az login --tenant <cluster tenant>"
[ -n "$subscription" ] || die "no subscription selected: az account set --subscription <id>"

run() {
  echo "+ $*" >&2
  "$@"
}

# A value of a finished deployment's outputs ('' when there is none).
deployment_output() { # SUBSCRIPTION RESOURCE_GROUP DEPLOYMENT OUTPUT
  az deployment group show --subscription "$1" -g "$2" -n "$3" \
    --query "properties.outputs.$4.value" -o tsv 2>/dev/null || true
}

oidc_issuer() {
  local issuer
  issuer=$(az aks show --subscription "$subscription" -g "$aks_rg" -n "$aks" --query oidcIssuerProfile.issuerUrl -o tsv) ||
    die "cannot read AKS cluster $aks_rg/$aks in subscription $subscription"
  [ -n "$issuer" ] || die "cluster $aks has no OIDC issuer: az aks update -g $aks_rg -n $aks --enable-oidc-issuer --enable-workload-identity"
  echo "$issuer"
}

ensure_group() { # SUBSCRIPTION NAME LOCATION
  if [ "$(az group exists --subscription "$1" -n "$2")" != true ]; then
    if $what_if; then
      echo "(what-if) would create resource group $2 in $3" >&2
      return 1
    fi
    run az group create --subscription "$1" -n "$2" -l "$3" -o none
  fi
}

deploy_servicebus_tenant() {
  $remote_sb || die "servicebus-tenant: set ONBOARD_SERVICEBUS_TENANT_ID, _SUBSCRIPTION and _RESOURCE_GROUP"
  local issuer sb_sub=$ONBOARD_SERVICEBUS_SUBSCRIPTION sb_rg=$ONBOARD_SERVICEBUS_RESOURCE_GROUP
  local sb_location=${ONBOARD_SERVICEBUS_LOCATION:-$location} actual_tenant
  issuer=$(oidc_issuer)
  actual_tenant=$(az account show --subscription "$sb_sub" --query tenantId -o tsv) ||
    die "subscription $sb_sub is not visible: az login --tenant $ONBOARD_SERVICEBUS_TENANT_ID"
  [ "$actual_tenant" = "$ONBOARD_SERVICEBUS_TENANT_ID" ] ||
    die "subscription $sb_sub belongs to tenant $actual_tenant, not ONBOARD_SERVICEBUS_TENANT_ID=$ONBOARD_SERVICEBUS_TENANT_ID"
  local params=(
    --subscription "$sb_sub" -g "$sb_rg" -n "$sb_deployment"
    --template-file "$root/infra/servicebus-tenant.bicep"
    --parameters prefix="$prefix" oidcIssuerUrl="$issuer"
    workerNamespace="$namespace" workerServiceAccount="$service_account" kedaOperatorSubject="$keda_subject"
  )
  if $what_if; then
    ensure_group "$sb_sub" "$sb_rg" "$sb_location" || return 0
    run az deployment group what-if "${params[@]}"
  else
    ensure_group "$sb_sub" "$sb_rg" "$sb_location"
    run az deployment group create "${params[@]}" -o none
  fi
}

deploy_azure() {
  local issuer
  issuer=$(oidc_issuer)
  local params=(
    --subscription "$subscription" -g "$rg" -n "$main_deployment"
    --template-file "$root/infra/main.bicep"
    --parameters prefix="$prefix" aksClusterName="$aks" aksResourceGroup="$aks_rg"
    oidcIssuerUrl="$issuer" tenantsResourceGroup="$tenants_rg"
    workerNamespace="$namespace" workerServiceAccount="$service_account"
    kedaOperatorSubject="$keda_subject" deployServiceBus="$(if $remote_sb; then echo false; else echo true; fi)"
  )
  if $what_if; then
    ensure_group "$subscription" "$rg" "$location" || return 0
    ensure_group "$subscription" "$tenants_rg" "$location" || return 0
    run az deployment group what-if "${params[@]}"
  else
    ensure_group "$subscription" "$rg" "$location"
    ensure_group "$subscription" "$tenants_rg" "$location"
    run az deployment group create "${params[@]}" -o none
  fi
}

# Writes $state/k8s: an overlay of k8s/base with this deployment's ids and config. It uses
# only what scripts/render-k8s.sh also renders (resources, images, JSON 6902 patches).
generate_overlay() {
  local out=$state/k8s
  local tenant client storage table_endpoint table sb_fqdn sb_name queue topic subscription_name keda_client
  local sb_tenant sb_client issuer
  tenant=$(deployment_output "$subscription" "$rg" "$main_deployment" entraTenantId)
  client=$(deployment_output "$subscription" "$rg" "$main_deployment" workerClientId)
  storage=$(deployment_output "$subscription" "$rg" "$main_deployment" storageAccountName)
  table_endpoint=$(deployment_output "$subscription" "$rg" "$main_deployment" tableEndpoint)
  table=$(deployment_output "$subscription" "$rg" "$main_deployment" journalTableName)
  issuer=$(oidc_issuer)
  if $remote_sb; then
    local sb_sub=$ONBOARD_SERVICEBUS_SUBSCRIPTION sb_rg=$ONBOARD_SERVICEBUS_RESOURCE_GROUP
    sb_tenant=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" entraTenantId)
    sb_client=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" workerClientId)
    keda_client=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" kedaClientId)
    sb_fqdn=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" serviceBusFullyQualifiedNamespace)
    sb_name=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" serviceBusNamespace)
    queue=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" queueName)
    topic=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" topicName)
    subscription_name=$(deployment_output "$sb_sub" "$sb_rg" "$sb_deployment" subscriptionName)
    [ -n "$sb_client" ] || die "no outputs of $sb_deployment in $sb_sub/$sb_rg: run 'infra/deploy.sh servicebus-tenant' first"
  else
    sb_tenant=$tenant
    sb_client=$client
    keda_client=$(deployment_output "$subscription" "$rg" "$main_deployment" kedaClientId)
    sb_fqdn=$(deployment_output "$subscription" "$rg" "$main_deployment" serviceBusFullyQualifiedNamespace)
    sb_name=$(deployment_output "$subscription" "$rg" "$main_deployment" serviceBusNamespace)
    queue=$(deployment_output "$subscription" "$rg" "$main_deployment" queueName)
    topic=$(deployment_output "$subscription" "$rg" "$main_deployment" topicName)
    subscription_name=$(deployment_output "$subscription" "$rg" "$main_deployment" subscriptionName)
  fi
  local sources=$main_deployment
  if $remote_sb; then sources="$main_deployment and $sb_deployment"; fi
  rm -rf "$out"
  mkdir -p "$out"
  cat >"$out/config.toml" <<EOF
# Generated by infra/deploy.sh from the outputs of $sources.
default_target = "prod"

[transport]
kind = "service_bus"
namespace = "$sb_fqdn"
queue = "$queue"
topic = "$topic"
subscription = "$subscription_name"

[transport.credential]
kind = "workload_identity"
tenant_id = "$sb_tenant"
client_id = "$sb_client"

[journal]
kind = "azure_table"
endpoint = "$table_endpoint"
table = "$table"

[journal.credential]
kind = "workload_identity"
tenant_id = "$tenant"
client_id = "$client"

[targets.prod]
subscription_id = "$subscription"
resource_group = "$tenants_rg"
location = "$location"
cluster_resource_group = "$aks_rg"
cluster_name = "$aks"
oidc_issuer = "$issuer"
storage_resource_group = "$rg"
storage_account = "$storage"
identity_entra_tenant_id = "$tenant"
cluster_entra_tenant_id = "$tenant"
arm_endpoint = "https://management.azure.com"

[targets.prod.credential]
kind = "workload_identity"
tenant_id = "$tenant"
client_id = "$client"

[targets.prod.kubernetes]
in_cluster = true

[saga]
message_budget_ms = 20000

[worker]
concurrency = 16
shutdown_grace_ms = 30000

[telemetry]
log_format = "json"
service_name = "onboarding-worker"

[health]
port = 8080
EOF
  local image_name=${ONBOARD_IMAGE%:*} image_tag=${ONBOARD_IMAGE##*:} config_sha base
  if [ "$image_name" = "$ONBOARD_IMAGE" ] || [[ "$image_tag" == */* ]]; then
    die "ONBOARD_IMAGE must be REPOSITORY:TAG (got '$ONBOARD_IMAGE')"
  fi
  config_sha=$({ sha256sum "$out/config.toml" 2>/dev/null || shasum -a 256 "$out/config.toml"; } | cut -d' ' -f1)
  base=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$root/k8s/base" "$out" 2>/dev/null) ||
    base=$root/k8s/base
  {
    echo "- op: replace"
    echo "  path: /data/config.toml"
    echo "  value: |"
    sed 's/^/    /' "$out/config.toml"
  } >"$out/config.patch.yaml"
  cat >"$out/kustomization.yaml" <<EOF
# Generated by infra/deploy.sh; do not edit (re-run the script).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
images:
  - name: onboardacr.azurecr.io/onboarding-worker
    newName: $image_name
    newTag: "$image_tag"
patches:
  - path: config.patch.yaml
    target: {kind: ConfigMap, name: worker-config}
  - path: deployment.patch.yaml
    target: {kind: Deployment, name: onboarding-worker}
  - path: serviceaccount.patch.yaml
    target: {kind: ServiceAccount, name: $service_account}
  - path: triggerauthentication.patch.yaml
    target: {kind: TriggerAuthentication, name: onboarding-worker-servicebus}
  - path: scaledobject.patch.yaml
    target: {kind: ScaledObject, name: onboarding-worker}
EOF
  # A changed config.toml changes the pod template, so the pods roll and read it.
  cat >"$out/deployment.patch.yaml" <<EOF
- op: add
  path: /spec/template/metadata/annotations/tenant-onboarding~1config-sha256
  value: "$config_sha"
EOF
  cat >"$out/serviceaccount.patch.yaml" <<EOF
- op: replace
  path: /metadata/annotations/azure.workload.identity~1client-id
  value: "$client"
EOF
  cat >"$out/triggerauthentication.patch.yaml" <<EOF
- op: replace
  path: /spec/podIdentity/identityId
  value: "$keda_client"
- op: replace
  path: /spec/podIdentity/identityTenantId
  value: "$sb_tenant"
EOF
  cat >"$out/scaledobject.patch.yaml" <<EOF
- op: replace
  path: /spec/triggers/0/metadata/namespace
  value: "$sb_name"
- op: replace
  path: /spec/triggers/0/metadata/queueName
  value: "$queue"
EOF
  echo "$out"
}

deploy_k8s() {
  command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed: az aks install-cli"
  run az aks get-credentials --subscription "$subscription" -g "$aks_rg" -n "$aks" --overwrite-existing
  kubectl get crd scaledobjects.keda.sh >/dev/null 2>&1 ||
    die "KEDA is not installed on $aks: az aks update -g $aks_rg -n $aks --enable-keda (or the KEDA Helm chart, see docs/deploy.md)"
  local overlay
  if [ -z "$(deployment_output "$subscription" "$rg" "$main_deployment" workerClientId)" ]; then
    if $what_if; then
      echo "(what-if) $main_deployment has no outputs yet: after 'infra/deploy.sh azure' this step applies k8s/base with its ids" >&2
      run kubectl kustomize "$root/k8s/base" >/dev/null
      return 0
    fi
    die "no outputs of $main_deployment in $rg: run 'infra/deploy.sh azure' first"
  fi
  overlay=$(generate_overlay)
  if $what_if; then
    # kubectl diff exits 1 when there are differences: that is the answer, not a failure.
    run kubectl diff -k "$overlay" || [ $? -eq 1 ]
  else
    run kubectl apply -k "$overlay"
    echo "deploy: applied. KEDA keeps the worker at 0 replicas until a command arrives;" \
      "send one with: producer send ... (docs/deploy.md, Verify)" >&2
  fi
}

destroy() {
  local principal tenants_scope cluster_scope role
  principal=$(deployment_output "$subscription" "$rg" "$main_deployment" workerPrincipalId)
  if $what_if; then
    echo "(what-if) would delete: the worker's Kubernetes objects (kubectl delete -k)," \
      "role assignments of principal ${principal:-<none>} on $tenants_rg and cluster $aks," \
      "the custom role 'Tenant onboarding agent pool operator' in $aks_rg" >&2
    [ "${ONBOARD_DELETE_RESOURCE_GROUPS:-}" = yes ] && echo "(what-if) would delete resource groups $rg, $tenants_rg" >&2
    return 0
  fi
  if command -v kubectl >/dev/null 2>&1 && [ -f "$state/k8s/kustomization.yaml" ]; then
    run az aks get-credentials --subscription "$subscription" -g "$aks_rg" -n "$aks" --overwrite-existing
    run kubectl delete -k "$state/k8s" --ignore-not-found
  fi
  if [ -n "$principal" ]; then
    tenants_scope=/subscriptions/$subscription/resourceGroups/$tenants_rg
    cluster_scope=$(az aks show --subscription "$subscription" -g "$aks_rg" -n "$aks" --query id -o tsv)
    run az role assignment delete --subscription "$subscription" --assignee "$principal" --scope "$tenants_scope" || true
    run az role assignment delete --subscription "$subscription" --assignee "$principal" --scope "$cluster_scope" || true
  fi
  role=$(az role definition list --subscription "$subscription" --custom-role-only true \
    --scope "/subscriptions/$subscription/resourceGroups/$aks_rg" \
    --query "[?starts_with(roleName, 'Tenant onboarding agent pool operator')].name" -o tsv)
  if [ -n "$role" ]; then
    run az role definition delete --subscription "$subscription" --name "$role" \
      --scope "/subscriptions/$subscription/resourceGroups/$aks_rg"
  fi
  if [ "${ONBOARD_DELETE_RESOURCE_GROUPS:-}" = yes ]; then
    # The storage account holds the tenants' data: offboard (and purge) tenants first.
    run az group delete --subscription "$subscription" -n "$rg" --yes
    run az group delete --subscription "$subscription" -n "$tenants_rg" --yes
    if $remote_sb; then
      run az group delete --subscription "$ONBOARD_SERVICEBUS_SUBSCRIPTION" -n "$ONBOARD_SERVICEBUS_RESOURCE_GROUP" --yes
    fi
  else
    echo "deploy: kept resource groups $rg and $tenants_rg (set ONBOARD_DELETE_RESOURCE_GROUPS=yes to delete them)" >&2
  fi
}

mkdir -p "$state"
case "$step" in
  servicebus-tenant) deploy_servicebus_tenant ;;
  azure) deploy_azure ;;
  k8s) deploy_k8s ;;
  destroy) destroy ;;
  all)
    if $remote_sb; then deploy_servicebus_tenant; fi
    deploy_azure
    deploy_k8s
    ;;
esac
