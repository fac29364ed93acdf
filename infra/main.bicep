// Azure side of the tenant onboarding worker, in the cluster's Entra tenant: the worker's
// identity (trusted by its Kubernetes service account), the storage account with the saga
// journal and the tenants' containers, the worker's least-privilege role assignments, and, when
// the Service Bus namespace lives in this same tenant, the namespace and KEDA's identity.
// When the namespace lives in another Entra tenant, set deployServiceBus=false and deploy
// servicebus-tenant.bicep there (docs/deploy.md, "Service Bus in another Entra tenant").

targetScope = 'resourceGroup'

@description('Short prefix of every resource name.')
@minLength(2)
@maxLength(10)
param prefix string = 'onboard'

param location string = resourceGroup().location

param tags object = {
  workload: 'tenant-onboarding'
}

@description('Name of the existing AKS cluster the worker provisions node pools in.')
param aksClusterName string

@description('Resource group of the AKS cluster (default: this one).')
param aksResourceGroup string = resourceGroup().name

@description('OIDC issuer URL of the AKS cluster (`az aks show -g RG -n NAME --query oidcIssuerProfile.issuerUrl -o tsv`).')
param oidcIssuerUrl string

@description('Existing resource group in which the worker creates the tenants\' managed identities.')
param tenantsResourceGroup string

@description('Kubernetes namespace of the worker (k8s/base/namespace.yaml).')
param workerNamespace string = 'tenant-onboarding'

@description('Kubernetes service account of the worker (k8s/base/serviceaccount.yaml).')
param workerServiceAccount string = 'onboarding-worker'

@description('Service account of the KEDA operator: kube-system:keda-operator for the AKS KEDA add-on, keda:keda-operator for the Helm chart.')
param kedaOperatorSubject string = 'system:serviceaccount:kube-system:keda-operator'

@description('Deploy the Service Bus namespace here. false when it lives in another Entra tenant (servicebus-tenant.bicep).')
param deployServiceBus bool = true

@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

param serviceBusNamespaceName string = 'sb-${prefix}-${uniqueString(resourceGroup().id)}'

param queueName string = 'tenant-commands'
param topicName string = 'tenant-events'
param subscriptionName string = 'operators'

@minLength(3)
@maxLength(24)
param storageAccountName string = take('st${prefix}${uniqueString(resourceGroup().id)}', 24)

param journalTableName string = 'sagajournal'

var workerSubject = 'system:serviceaccount:${workerNamespace}:${workerServiceAccount}'

module workerIdentity 'modules/identity.bicep' = {
  name: 'worker-identity'
  params: {
    name: 'id-${prefix}-worker'
    location: location
    tags: tags
    oidcIssuerUrl: oidcIssuerUrl
    federatedSubjects: [
      {
        name: 'aks-${workerNamespace}-${workerServiceAccount}'
        subject: workerSubject
      }
    ]
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    accountName: storageAccountName
    location: location
    tags: tags
    journalTableName: journalTableName
  }
}

module storageRoles 'modules/storage-roles.bicep' = {
  name: 'storage-roles'
  params: {
    accountName: storage.outputs.accountName
    journalTableName: storage.outputs.tableName
    workerPrincipalId: workerIdentity.outputs.principalId
  }
}

module clusterRoles 'modules/cluster-roles.bicep' = {
  name: 'cluster-roles'
  scope: resourceGroup(aksResourceGroup)
  params: {
    clusterName: aksClusterName
    workerPrincipalId: workerIdentity.outputs.principalId
  }
}

module tenantsRoles 'modules/tenants-rg-roles.bicep' = {
  name: 'tenants-rg-roles'
  scope: resourceGroup(tenantsResourceGroup)
  params: {
    workerPrincipalId: workerIdentity.outputs.principalId
  }
}

module serviceBus 'modules/servicebus.bicep' = if (deployServiceBus) {
  name: 'servicebus'
  params: {
    namespaceName: serviceBusNamespaceName
    location: location
    tags: tags
    sku: serviceBusSku
    queueName: queueName
    topicName: topicName
    subscriptionName: subscriptionName
  }
}

// KEDA signs in with its own service account's token, not the worker's, so it gets its own
// identity with nothing but the right to read the queue's length.
module kedaIdentity 'modules/identity.bicep' = if (deployServiceBus) {
  name: 'keda-identity'
  params: {
    name: 'id-${prefix}-keda'
    location: location
    tags: tags
    oidcIssuerUrl: oidcIssuerUrl
    federatedSubjects: [
      {
        name: 'aks-keda-operator'
        subject: kedaOperatorSubject
      }
    ]
  }
}

module serviceBusRoles 'modules/servicebus-roles.bicep' = if (deployServiceBus) {
  name: 'servicebus-roles'
  params: {
    namespaceName: serviceBus.outputs.namespaceName
    queueName: serviceBus.outputs.queueName
    topicName: serviceBus.outputs.topicName
    workerPrincipalId: workerIdentity.outputs.principalId
    kedaPrincipalId: kedaIdentity.outputs.principalId
  }
}

// Identifiers only: no key, connection string or secret is ever an output.
output entraTenantId string = tenant().tenantId
output subscriptionId string = subscription().subscriptionId
output workerClientId string = workerIdentity.outputs.clientId
output workerPrincipalId string = workerIdentity.outputs.principalId
output storageAccountName string = storage.outputs.accountName
output tableEndpoint string = storage.outputs.tableEndpoint
output journalTableName string = storage.outputs.tableName
output serviceBusNamespace string = deployServiceBus ? serviceBus.outputs.namespaceName : ''
output serviceBusFullyQualifiedNamespace string = deployServiceBus ? serviceBus.outputs.fullyQualifiedNamespace : ''
output queueName string = queueName
output topicName string = topicName
output subscriptionName string = subscriptionName
output kedaClientId string = deployServiceBus ? kedaIdentity.outputs.clientId : ''
