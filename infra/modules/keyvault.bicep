// Key Vault (RBAC authorization, soft delete, purge protection) holding the Azure OpenAI key
// `voicelive-api-key` (read at deploy time from the AI account; a new version = rotation)
// and, when given, the Zep API key. The service identity may read secrets; the deployer
// identity may write them (it creates `memory-token-keys` once, see memorykeys.bicep).

@description('Azure region of the vault.')
param location string

@description('Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Name of the AI Services account whose key1 becomes the voicelive-api-key secret.')
param aiAccountName string

@description('Store the AI account key as a secret (false in keyless entra mode).')
param storeApiKey bool = true

@description('Name of the Azure OpenAI key secret (the service\'s KEY_VAULT_SECRET_NAME).')
param apiKeySecretName string = 'voicelive-api-key'

@secure()
@description('Zep API key; stored as the zep-api-key secret when not empty.')
param zepApiKey string = ''

@description('Principal id of the service identity (gets Key Vault Secrets User).')
param appPrincipalId string

@description('Principal id of the deployment script identity (gets Key Vault Secrets Officer).')
param deployerPrincipalId string

@description('Purge protection cannot be turned off again once on; keep it on in production.')
param enablePurgeProtection bool = true

param tags object = {}

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource aiAccount 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: aiAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: enablePurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
  }
}

resource apiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (storeApiKey) {
  parent: vault
  name: apiKeySecretName
  properties: {
    value: aiAccount.listKeys().key1
    contentType: 'Azure OpenAI api-key (rotate: new version of this secret)'
  }
}

resource zepKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(zepApiKey)) {
  parent: vault
  name: 'zep-api-key'
  properties: {
    value: zepApiKey
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      keyVaultSecretsUser
    )
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      keyVaultSecretsOfficer
    )
    principalId: deployerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
// Role assignment ids, so that consumers wait for the grants before they read secrets.
output appReaderAssignmentId string = appSecretsUser.id
output deployerWriterAssignmentId string = deployerSecretsOfficer.id
