// The worker's right on the AKS cluster: manage agent pools (one per tenant) and read the
// cluster, nothing else. Deployed into the cluster's resource group.

param clusterName string

@description('Object (principal) id of the worker identity.')
param workerPrincipalId string

resource cluster 'Microsoft.ContainerService/managedClusters@2026-08-01' existing = {
  name: clusterName
}

resource agentPoolOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'tenant-onboarding-agent-pool-operator')
  properties: {
    roleName: 'Tenant onboarding agent pool operator (${uniqueString(resourceGroup().id)})'
    description: 'Read an AKS cluster and create, update and delete its agent pools.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.ContainerService/managedClusters/read'
          'Microsoft.ContainerService/managedClusters/agentPools/read'
          'Microsoft.ContainerService/managedClusters/agentPools/write'
          'Microsoft.ContainerService/managedClusters/agentPools/delete'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource workerManagesAgentPools 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, workerPrincipalId, agentPoolOperator.id)
  scope: cluster
  properties: {
    // Custom roles are referenced by their subscription-level id, like built-in ones.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', agentPoolOperator.name)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: one node pool per tenant'
  }
}
