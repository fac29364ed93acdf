// The Service Bus namespace of the onboarding worker: the commands queue (sessions per tenant,
// duplicate detection by MessageId) and the tenant-events topic. Local (SAS key) auth is
// disabled: every client signs in with Entra ID, so there is no key or connection string to leak.

@description('Service Bus namespace name (globally unique, 6-50 characters).')
@minLength(6)
@maxLength(50)
param namespaceName string

param location string = resourceGroup().location

param tags object = {}

@description('Sessions need Standard or Premium; Basic has neither sessions nor topics.')
@allowed([
  'Standard'
  'Premium'
])
param sku string = 'Standard'

@description('Queue of OnboardTenant / OffboardTenant commands; SessionId = tenant id.')
param queueName string = 'tenant-commands'

@description('Topic the worker publishes CloudEvents to.')
param topicName string = 'tenant-events'

@description('Subscription on the events topic for operators (`producer status`) and downstream systems.')
param subscriptionName string = 'operators'

@description('Peek-lock duration. The worker advances a saga for at most its message budget (20 s by default), well under this.')
param lockDuration string = 'PT1M'

@description('Duplicate detection window: a command re-sent with the same MessageId inside it is dropped.')
param duplicateDetectionWindow string = 'PT10M'

@description('Deliveries before a message is dead-lettered.')
param maxDeliveryCount int = 10

@description('Time to live of commands and events that nobody consumes.')
param messageTimeToLive string = 'P14D'

resource sbNamespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: sku
    tier: sku
    capacity: (sku == 'Premium') ? 1 : null
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource commands 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: sbNamespace
  name: queueName
  properties: {
    requiresSession: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    lockDuration: lockDuration
    defaultMessageTimeToLive: messageTimeToLive
    enableBatchedOperations: true
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

resource events 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: sbNamespace
  name: topicName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: messageTimeToLive
    supportOrdering: true
    enableBatchedOperations: true
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

resource operators 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = {
  parent: events
  name: subscriptionName
  properties: {
    lockDuration: lockDuration
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: messageTimeToLive
    enableBatchedOperations: true
  }
}

output namespaceName string = sbNamespace.name
output namespaceId string = sbNamespace.id
// Host name only (e.g. sb-x.servicebus.windows.net): what the worker's AMQP client connects to.
output fullyQualifiedNamespace string = replace(replace(sbNamespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')
output queueName string = commands.name
output topicName string = events.name
output subscriptionName string = operators.name
