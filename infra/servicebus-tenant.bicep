// The Service Bus side when the namespace lives in another Entra tenant than the AKS cluster.
// Deploy this into a resource group of THAT tenant's subscription. It creates the namespace and
// two identities there, each trusting a service account of the cluster through the cluster's
// OIDC issuer (a federated credential accepts any issuer, in any tenant): the worker's, which
// may receive from and send to the entities, and KEDA's, which may read the queue's length.
// No secret crosses the tenant boundary.

targetScope = 'resourceGroup'

@minLength(2)
@maxLength(10)
param prefix string = 'onboard'

param location string = resourceGroup().location

param tags object = {
  workload: 'tenant-onboarding'
}

@description('OIDC issuer URL of the AKS cluster in the OTHER (cluster) tenant.')
param oidcIssuerUrl string

param workerNamespace string = 'tenant-onboarding'
param workerServiceAccount string = 'onboarding-worker'

@description('Service account of the KEDA operator: kube-system:keda-operator for the AKS KEDA add-on, keda:keda-operator for the Helm chart.')
param kedaOperatorSubject string = 'system:serviceaccount:kube-system:keda-operator'

@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

param serviceBusNamespaceName string = 'sb-${prefix}-${uniqueString(resourceGroup().id)}'

param queueName string = 'tenant-commands'
param topicName string = 'tenant-events'
param subscriptionName string = 'operators'

module serviceBus 'modules/servicebus.bicep' = {
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

module workerIdentity 'modules/identity.bicep' = {
  name: 'worker-servicebus-identity'
  params: {
    name: 'id-${prefix}-worker-sb'
    location: location
    tags: tags
    oidcIssuerUrl: oidcIssuerUrl
    federatedSubjects: [
      {
        name: 'aks-${workerNamespace}-${workerServiceAccount}'
        subject: 'system:serviceaccount:${workerNamespace}:${workerServiceAccount}'
      }
    ]
  }
}

module kedaIdentity 'modules/identity.bicep' = {
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

module serviceBusRoles 'modules/servicebus-roles.bicep' = {
  name: 'servicebus-roles'
  params: {
    namespaceName: serviceBus.outputs.namespaceName
    queueName: serviceBus.outputs.queueName
    topicName: serviceBus.outputs.topicName
    workerPrincipalId: workerIdentity.outputs.principalId
    kedaPrincipalId: kedaIdentity.outputs.principalId
  }
}

// What the cluster side needs: this tenant's id and the two client ids. No keys.
output entraTenantId string = tenant().tenantId
output workerClientId string = workerIdentity.outputs.clientId
output kedaClientId string = kedaIdentity.outputs.clientId
output serviceBusNamespace string = serviceBus.outputs.namespaceName
output serviceBusFullyQualifiedNamespace string = serviceBus.outputs.fullyQualifiedNamespace
output queueName string = serviceBus.outputs.queueName
output topicName string = serviceBus.outputs.topicName
output subscriptionName string = serviceBus.outputs.subscriptionName
