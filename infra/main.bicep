// engram-voice on Azure: one resource group with the Container App (token vending, calls and
// memory enrichment), Key Vault, the Azure AI Services account with gpt-realtime (which also
// serves Azure AI Voice Live), the memory queue (PostgreSQL Flexible Server with Entra sign-in
// and a separate worker app, or SQLite on an Azure Files share), Log Analytics and the
// Static Web App.
//
//   az deployment sub create --location eastus2 \
//     --template-file infra/main.bicep --parameters infra/main.parameters.json
targetScope = 'subscription'

@description('Region of every resource: one that serves gpt-realtime.')
@allowed([
  'eastus2'
  'swedencentral'
])
param location string = 'eastus2'

@description('Resource group to create (or update).')
param resourceGroupName string = 'rg-engram-voice'

@description('Short name used in resource names.')
@minLength(3)
@maxLength(12)
param name string = 'engramvoice'

@description('Container image of the service, e.g. myregistry.azurecr.io/engram-voice:0.1.0.')
param containerImage string

@description('Azure Container Registry holding the image (the service identity gets AcrPull on it); empty for a public image.')
param registryName string = ''

@description('Resource group of that registry (default: the deployment\'s resource group).')
param registryResourceGroupName string = resourceGroupName

@description('How the service authenticates to Azure OpenAI: key-vault (reads voicelive-api-key itself; rotation without restart), api-key-secret-ref (Container Apps injects the key from Key Vault) or entra (keyless, managed identity).')
@allowed([
  'key-vault'
  'api-key-secret-ref'
  'entra'
])
param openAiAuth string = 'key-vault'

@description('Serve calls through Azure AI Voice Live (WebRTC) on the same AI Services account: sets AZURE_VOICELIVE_*. Needs a region where Voice Live serves WebRTC (eastus2; not swedencentral).')
param voiceLive bool = true

@description('Voice Live model (AZURE_VOICELIVE_MODEL).')
param voiceLiveModel string = 'gpt-realtime'

@description('Voice Live api-version (AZURE_VOICELIVE_API_VERSION); the GA 2026-07-15 does not serve WebRTC calls.')
@allowed([
  '2026-01-01-preview'
  '2026-06-01-preview'
])
param voiceLiveApiVersion string = '2026-01-01-preview'

@description('GlobalStandard capacity of the gpt-realtime deployment.')
@minValue(1)
param realtimeCapacity int = 10

@description('How callers authenticate (AUTH_MODE): entra (the service validates tokens) or easyauth (Container Apps authentication validates them).')
@allowed([
  'entra'
  'easyauth'
])
param authMode string = 'entra'

@description('Directory (tenant) id that issues caller tokens.')
param entraTenantId string = tenant().tenantId

@description('Accepted caller token audiences, comma-separated, e.g. api://engram-voice.')
param entraAudience string

@description('easyauth only: client id of the app registration whose tokens Container Apps authentication accepts.')
param easyAuthClientId string = ''

@description('More browser origins allowed to call the API (comma-separated), besides the Static Web App.')
param extraCorsOrigins string = ''

@description('Memory queue backend (MEMORY_QUEUE). postgres: Azure Database for PostgreSQL with Entra sign-in, the app scales out and the workers run as their own app. sqlite: one replica on an Azure Files share (WAL on SMB is unsupported by SQLite; see infra/README.md).')
@allowed([
  'postgres'
  'sqlite'
])
param memoryQueue string = 'postgres'

@description('postgres: compute size of the server, e.g. Standard_B1ms (Burstable) or Standard_D2ds_v5 (GeneralPurpose).')
param postgresSkuName string = 'Standard_B1ms'

@description('postgres: compute tier of postgresSkuName.')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param postgresTier string = 'Burstable'

@description('postgres: storage in GiB (grows automatically).')
@minValue(32)
param postgresStorageGiB int = 32

@description('postgres: zone-redundant standby (GeneralPurpose or MemoryOptimized only).')
param postgresHighAvailability bool = false

@description('postgres: fewest and most delivery worker replicas (engram-voice worker as its own app).')
@minValue(0)
param workerMinReplicas int = 1

@minValue(1)
param workerMaxReplicas int = 3

@description('Migration from sqlite to postgres: also run one worker on the old SQLite file until it is empty, then deploy again without it (docs/operations.md).')
param sqliteDrain bool = false

@description('Zep base URL (ZEP_API_URL); empty: accepted turns wait in the queue until it is set.')
param zepApiUrl string = ''

@secure()
@description('Zep API key (stored in Key Vault as zep-api-key); required when zepApiUrl is set.')
param zepApiKey string = ''

@description('Service log level.')
@allowed([
  'debug'
  'info'
  'warning'
  'error'
])
param logLevel string = 'info'

@description('Minimum replicas of the service (with sqlite, 1 keeps the in-process memory worker running).')
@minValue(0)
param minReplicas int = 1

@description('Maximum replicas of the service, added by the HTTP rule (capped at 1 while memoryQueue is sqlite).')
@minValue(1)
param maxReplicas int = 3

@description('Concurrent requests per replica before scaling out.')
@minValue(1)
param concurrentRequests int = 50

@description('Region of the Static Web App (it is offered in a few regions only).')
@allowed([
  'westus2'
  'centralus'
  'eastus2'
  'westeurope'
  'eastasia'
])
param staticWebAppLocation string = 'eastus2'

@description('Key Vault purge protection (cannot be disabled once enabled).')
param enablePurgeProtection bool = true

param tags object = {
  app: 'engram-voice'
}

var suffix = uniqueString(subscription().id, resourceGroupName, name)
var zepConfigured = !empty(zepApiUrl)
var extraOrigins = empty(extraCorsOrigins) ? [] : split(extraCorsOrigins, ',')

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: group
  params: {
    location: location
    name: 'log-${name}-${suffix}'
    tags: tags
  }
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: group
  params: {
    location: location
    appIdentityName: 'id-${name}'
    deployerIdentityName: 'id-${name}-deploy'
    tags: tags
  }
}

module registryPull 'modules/acrpull.bicep' = {
  name: 'registry-pull'
  scope: resourceGroup(registryResourceGroupName)
  dependsOn: [
    group
  ]
  params: {
    registryName: registryName
    appPrincipalId: identity.outputs.appPrincipalId
  }
}

module openai 'modules/openai.bicep' = {
  name: 'openai'
  scope: group
  params: {
    location: location
    name: 'ai-${name}-${suffix}'
    capacity: realtimeCapacity
    disableLocalAuth: openAiAuth == 'entra'
    appPrincipalId: identity.outputs.appPrincipalId
    voiceLive: voiceLive
    voiceLiveKeyless: openAiAuth == 'entra'
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: group
  params: {
    location: location
    name: 'kv-${take(suffix, 13)}'
    aiAccountName: openai.outputs.name
    storeApiKey: openAiAuth != 'entra'
    zepApiKey: zepApiKey
    appPrincipalId: identity.outputs.appPrincipalId
    deployerPrincipalId: identity.outputs.deployerPrincipalId
    enablePurgeProtection: enablePurgeProtection
    tags: tags
  }
}

module memoryKeys 'modules/memorykeys.bicep' = {
  name: 'memory-token-keys'
  scope: group
  params: {
    location: location
    vaultName: keyVault.outputs.name
    deployerIdentityId: identity.outputs.deployerIdentityId
    writerAssignmentId: keyVault.outputs.deployerWriterAssignmentId
    tags: tags
  }
}

module postgres 'modules/postgres.bicep' = if (memoryQueue == 'postgres') {
  name: 'memory-postgres'
  scope: group
  params: {
    location: location
    name: 'psql-${name}-${suffix}'
    skuName: postgresSkuName
    tier: postgresTier
    storageSizeGB: postgresStorageGiB
    highAvailability: postgresHighAvailability
    appPrincipalId: identity.outputs.appPrincipalId
    appIdentityName: identity.outputs.appIdentityName
    tags: tags
  }
}

// Kept with postgres too: it holds the SQLite queue while migrating (drain) and for a rollback.
module queueStorage 'modules/storage.bicep' = {
  name: 'queue-storage'
  scope: group
  params: {
    location: location
    name: 'st${take(suffix, 13)}'
    tags: tags
  }
}

module web 'modules/staticwebapp.bicep' = {
  name: 'static-web-app'
  scope: group
  params: {
    location: staticWebAppLocation
    name: 'swa-${name}-${suffix}'
    tags: tags
  }
}

module app 'modules/containerapp.bicep' = {
  name: 'container-app'
  scope: group
  params: {
    location: location
    environmentName: 'cae-${name}'
    appName: 'ca-${name}'
    workspaceName: monitoring.outputs.name
    identityId: identity.outputs.appIdentityId
    identityClientId: identity.outputs.appClientId
    image: containerImage
    registryServer: registryPull.outputs.loginServer
    openAiAuth: openAiAuth
    openAiEndpoints: openai.outputs.endpoint
    openAiDeployment: openai.outputs.deploymentName
    voiceLiveEndpoint: voiceLive ? openai.outputs.voiceLiveEndpoint : ''
    voiceLiveModel: voiceLiveModel
    voiceLiveApiVersion: voiceLiveApiVersion
    keyVaultUri: keyVault.outputs.uri
    memoryTokenKeysSecretName: memoryKeys.outputs.secretName
    authMode: authMode
    entraTenantId: entraTenantId
    entraAudience: entraAudience
    easyAuthClientId: easyAuthClientId
    corsAllowOrigins: join(concat(['https://${web.outputs.defaultHostname}'], extraOrigins), ',')
    memoryQueue: memoryQueue
    postgresHost: memoryQueue == 'postgres' ? postgres.outputs.host : ''
    postgresDatabase: memoryQueue == 'postgres' ? postgres.outputs.databaseName : 'engram_voice'
    postgresUser: memoryQueue == 'postgres' ? postgres.outputs.user : ''
    sqliteDrain: sqliteDrain
    workerMinReplicas: workerMinReplicas
    workerMaxReplicas: workerMaxReplicas
    storageAccountName: queueStorage.outputs.accountName
    shareName: queueStorage.outputs.shareName
    zepApiUrl: zepApiUrl
    hasZepApiKey: zepConfigured
    logLevel: logLevel
    minReplicas: minReplicas
    maxReplicas: maxReplicas
    concurrentRequests: concurrentRequests
    tags: tags
  }
}

output resourceGroupName string = group.name
output appUrl string = app.outputs.url
output staticWebAppHostname string = web.outputs.defaultHostname
output staticWebAppName string = web.outputs.name
output keyVaultName string = keyVault.outputs.name
output identityClientId string = identity.outputs.appClientId
output azureOpenAiEndpoint string = openai.outputs.endpoint
output voiceLiveEndpoint string = voiceLive ? openai.outputs.voiceLiveEndpoint : ''
output postgresHost string = memoryQueue == 'postgres' ? postgres.outputs.host : ''
output workerAppName string = app.outputs.workerName
