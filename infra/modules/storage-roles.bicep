// The worker's rights on the storage account: its journal table, the tenants' containers
// (control plane only, no data access), and the delegated right to grant each tenant identity
// Storage Blob Data Contributor, narrowed by an ABAC condition to exactly that role, to service
// principals, and to principals other than the worker itself.

param accountName string
param journalTableName string

@description('Object (principal) id of the worker identity.')
param workerPrincipalId string

var roles = {
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  roleBasedAccessControlAdministrator: 'f58310d9-a9f6-439a-9e8d-f62e7b41a168'
}

// ba92f5b4-2d11-453d-a403-e96b0029c9fe is Storage Blob Data Contributor. (A multi-line string
// cannot interpolate, so the id is written out and the worker's own principal id is the
// placeholder WORKER_PRINCIPAL_ID, which delegationCondition below replaces.)
// The condition reads: any role assignment this principal writes must be for Storage Blob Data
// Contributor, for a service principal, and for a principal other than the worker itself; any it
// deletes must be one of those. Everything else the role allows (reads) is unaffected.
// Why exclude the worker: it holds this right on the whole account, so without the exclusion it
// could assign itself Storage Blob Data Contributor and read every tenant's blobs, the data
// access its own roles deliberately leave out (see containerOperator).
// Syntax as in Microsoft's "Examples to delegate Azure role assignment management with
// conditions": writes are judged on @Request attributes, deletes on @Resource ones, and the
// exclusion uses ForAnyOfAllValues:GuidNotEquals as its "Allow most roles, but don't allow others
// to assign roles" example does (there on RoleDefinitionId, here on PrincipalId).
// What a condition cannot do: delegation conditions have no attribute for the scope of the
// assignment, so nothing here stops an assignment on the account itself rather than on one
// container. "Container scopes only" is enforced by the worker's provisioner, which refuses to
// assign at the account scope.
var delegationConditionTemplate = '''
(
 (
  !(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})
 )
 OR
 (
  @Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {ba92f5b4-2d11-453d-a403-e96b0029c9fe}
  AND
  @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}
  AND
  @Request[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {WORKER_PRINCIPAL_ID}
 )
)
AND
(
 (
  !(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})
 )
 OR
 (
  @Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {ba92f5b4-2d11-453d-a403-e96b0029c9fe}
  AND
  @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}
  AND
  @Resource[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {WORKER_PRINCIPAL_ID}
 )
)
'''

// main.bicep passes the worker identity's principalId output (an object id Entra generated, never
// operator input), so it is safe to splice into the condition.
var delegationCondition = replace(delegationConditionTemplate, 'WORKER_PRINCIPAL_ID', workerPrincipalId)

resource account 'Microsoft.Storage/storageAccounts@2025-08-01' existing = {
  name: accountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-08-01' existing = {
  parent: account
  name: 'default'
}

resource journal 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-08-01' existing = {
  parent: tableService
  name: journalTableName
}

// Table-scoped: the worker reads and writes saga records in its journal table and nothing else.
resource workerWritesJournal 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(journal.id, workerPrincipalId, roles.storageTableDataContributor)
  scope: journal
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: saga journal records'
  }
}

// Create and delete tenant containers through ARM without any right on the data in them
// (Storage Blob Data Contributor would also grant reading every tenant's blobs).
resource containerOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(account.id, 'tenant-onboarding-container-operator')
  properties: {
    roleName: 'Tenant onboarding container operator (${uniqueString(account.id)})'
    description: 'Create, read and delete blob containers of one storage account through Azure Resource Manager; no data access.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Storage/storageAccounts/blobServices/containers/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/write'
          'Microsoft.Storage/storageAccounts/blobServices/containers/delete'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      account.id
    ]
  }
}

resource workerManagesContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, workerPrincipalId, containerOperator.id)
  scope: account
  properties: {
    // Custom roles are referenced by their subscription-level id, like built-in ones.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', containerOperator.name)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: create and delete tenant containers'
  }
}

// Account scope is the narrowest fixed scope: tenant containers are created at run time, and
// the worker assigns the role on each container scope below this one.
resource workerDelegatesBlobAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, workerPrincipalId, roles.roleBasedAccessControlAdministrator)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.roleBasedAccessControlAdministrator)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Onboarding worker: may only assign Storage Blob Data Contributor, only to service principals other than itself'
    condition: delegationCondition
    conditionVersion: '2.0'
  }
}
