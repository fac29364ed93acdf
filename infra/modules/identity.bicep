// A user-assigned managed identity and the federated credentials that let Kubernetes service
// accounts of one cluster (one OIDC issuer) sign in as it. No secret exists anywhere: the pod's
// projected service-account token is exchanged for an Entra token.

@description('Name of the user-assigned managed identity.')
param name string

param location string = resourceGroup().location

param tags object = {}

@description('OIDC issuer URL of the AKS cluster whose service-account tokens this identity trusts (`az aks show --query oidcIssuerProfile.issuerUrl`).')
param oidcIssuerUrl string

@description('Service accounts trusted by this identity: [{ name: FIC name, subject: system:serviceaccount:<namespace>:<service account> }].')
param federatedSubjects array

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: name
  location: location
  tags: tags
}

// Federated credentials on one identity must be written one at a time (concurrent writes fail
// with ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity), hence batchSize(1).
@batchSize(1)
resource federated 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2024-11-30' = [for fic in federatedSubjects: {
  parent: identity
  name: fic.name
  properties: {
    issuer: oidcIssuerUrl
    subject: fic.subject
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}]

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
output tenantId string = identity.properties.tenantId
