// Data-plane roles on the Service Bus entities, each scoped to one entity (never the namespace):
// the worker receives from the commands queue, sends continuations to it and publishes to the
// events topic; KEDA reads the queue's message count.

param namespaceName string
param queueName string
param topicName string

@description('Object (principal) id of the worker identity in the Service Bus namespace\'s Entra tenant.')
param workerPrincipalId string

@description('Object (principal) id of the identity KEDA uses for the queue; empty to skip.')
param kedaPrincipalId string = ''

// Built-in role definition ids (the same in every Entra tenant).
var roles = {
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  // KEDA reads the queue's runtime properties (active message count), which Service Bus
  // only grants with the Manage right: Data Owner, here narrowed to the one queue.
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
}

resource sbNamespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: namespaceName
}

resource commands 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = {
  parent: sbNamespace
  name: queueName
}

resource events 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' existing = {
  parent: sbNamespace
  name: topicName
}

resource workerReceivesCommands 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(commands.id, workerPrincipalId, roles.serviceBusDataReceiver)
  scope: commands
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: receive (peek-lock, sessions) from the commands queue'
  }
}

resource workerSendsContinuations 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(commands.id, workerPrincipalId, roles.serviceBusDataSender)
  scope: commands
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: schedule saga continuations on the commands queue'
  }
}

resource workerPublishesEvents 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(events.id, workerPrincipalId, roles.serviceBusDataSender)
  scope: events
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: publish CloudEvents to the tenant-events topic'
  }
}

resource kedaReadsQueueLength 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(kedaPrincipalId)) {
  name: guid(commands.id, kedaPrincipalId, roles.serviceBusDataOwner)
  scope: commands
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: kedaPrincipalId
    principalType: 'ServicePrincipal'
    description: 'KEDA: read the commands queue message count to scale the worker'
  }
}
