// The storage account holding the saga journal (a table) and the tenants' blob containers (one
// per tenant, created by the worker). Shared keys are disabled: data access is Entra ID only.

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param accountName string

param location string = resourceGroup().location

param tags object = {}

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_ZRS'

@description('Table holding one saga record per tenant (ETag compare-and-swap).')
param journalTableName string = 'sagajournal'

@description('Days a deleted tenant container (and blob) can still be restored.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

resource account 'Microsoft.Storage/storageAccounts@2025-08-01' = {
  name: accountName
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    accessTier: 'Hot'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-08-01' = {
  parent: account
  name: 'default'
  properties: {
    // Tenant data is kept unless a command asks to purge it; soft delete covers mistakes.
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-08-01' = {
  parent: account
  name: 'default'
}

resource journal 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-08-01' = {
  parent: tableService
  name: journalTableName
}

output accountName string = account.name
output accountId string = account.id
output tableName string = journal.name
output tableEndpoint string = account.properties.primaryEndpoints.table
output blobEndpoint string = account.properties.primaryEndpoints.blob
