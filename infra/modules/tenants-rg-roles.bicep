// The worker's right on the resource group of the tenants' identities: create and delete
// user-assigned identities and their federated credentials. Deployed into that group.

@description('Object (principal) id of the worker identity.')
param workerPrincipalId string

var managedIdentityContributor = 'e40ec5ca-96e0-45a2-b4ff-59039f2c2b59'

resource workerManagesTenantIdentities 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, workerPrincipalId, managedIdentityContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', managedIdentityContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: tenant identities and their federated credentials'
  }
}
