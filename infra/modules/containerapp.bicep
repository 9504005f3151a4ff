// Container Apps environment and the engram-voice Container App: user-assigned identity,
// every setting as an environment variable (names as the service reads them, see
// docs/configuration.md), secrets as Key Vault references, HTTPS-only ingress on PORT 8000,
// /healthz and /readyz probes and an HTTP scale rule. The memory queue is PostgreSQL (the
// service scales out, `engram-voice worker` runs as its own Container App, see
// workerapp.bicep) or SQLite on Azure Files (one replica with its in-process worker).

@description('Azure region of the environment and the app.')
param location string

@description('Container Apps environment name.')
param environmentName string

@description('Container App name.')
param appName string

@description('Log Analytics workspace that receives the environment\'s logs.')
param workspaceName string

@description('Resource id of the service identity.')
param identityId string

@description('Client id of the service identity (AZURE_CLIENT_ID).')
param identityClientId string

@description('Container image, e.g. myregistry.azurecr.io/engram-voice:0.1.0.')
param image string

@description('Registry login server pulled with the service identity (AcrPull, see acrpull.bicep); empty for a public image.')
param registryServer string = ''

@description('How the service authenticates to Azure OpenAI.')
@allowed([
  'key-vault'
  'api-key-secret-ref'
  'entra'
])
param openAiAuth string

@description('Azure OpenAI endpoint(s), comma-separated, priority order (AZURE_OPENAI_ENDPOINTS).')
param openAiEndpoints string

@description('gpt-realtime deployment name (AZURE_OPENAI_DEPLOYMENT).')
param openAiDeployment string

@description('Azure AI Voice Live resource URL (AZURE_VOICELIVE_ENDPOINT), e.g. https://ai-x.services.ai.azure.com; empty: Voice Live is not configured.')
param voiceLiveEndpoint string = ''

@description('Voice Live model (AZURE_VOICELIVE_MODEL).')
param voiceLiveModel string = 'gpt-realtime'

@description('Voice Live api-version (AZURE_VOICELIVE_API_VERSION): a preview version that serves /calls (the GA 2026-07-15 and v1 do not).')
@allowed([
  '2026-01-01-preview'
  '2026-06-01-preview'
])
param voiceLiveApiVersion string = '2026-01-01-preview'

@description('Name of the Voice Live key secret in the vault (AZURE_VOICELIVE_KEY_SECRET).')
param voiceLiveKeySecretName string = 'voicelive-api-key'

@description('Vault URI, e.g. https://kv-x.vault.azure.net/ (as the vault reports it).')
param keyVaultUri string

@description('Name of the Azure OpenAI key secret in the vault (KEY_VAULT_SECRET_NAME).')
param apiKeySecretName string = 'voicelive-api-key'

@description('Name of the MEMORY_TOKEN_KEYS secret in the vault.')
param memoryTokenKeysSecretName string = 'memory-token-keys'

@description('How callers authenticate (AUTH_MODE).')
@allowed([
  'entra'
  'easyauth'
])
param authMode string

@description('Directory (tenant) id that issues caller tokens (ENTRA_TENANT_ID).')
param entraTenantId string

@description('Accepted caller token audiences, comma-separated (ENTRA_AUDIENCE).')
param entraAudience string

@description('easyauth mode: client id of the app registration Container Apps authentication validates tokens for.')
param easyAuthClientId string = ''

@description('Browser origins allowed to call the API, comma-separated (CORS_ALLOW_ORIGINS).')
param corsAllowOrigins string

@description('Memory queue backend (MEMORY_QUEUE): postgres (several replicas, separate workers) or sqlite (one replica).')
@allowed([
  'postgres'
  'sqlite'
])
param memoryQueue string = 'postgres'

@description('PostgreSQL server host name (MEMORY_POSTGRES_HOST); postgres queue only.')
param postgresHost string = ''

@description('PostgreSQL database (MEMORY_POSTGRES_DB).')
param postgresDatabase string = 'engram_voice'

@description('Entra role the service identity signs in as (MEMORY_POSTGRES_USER): the identity\'s name.')
param postgresUser string = ''

@description('Storage account with the queue share (sqlite queue, and the drain of an old SQLite queue).')
param storageAccountName string

@description('File share mounted at /data/memory (sqlite queue, and the drain of an old SQLite queue).')
param shareName string

@description('postgres only: also run one worker on the old SQLite file until it is empty (migration).')
param sqliteDrain bool = false

@description('postgres only: fewest delivery worker replicas.')
@minValue(0)
param workerMinReplicas int = 1

@description('postgres only: most delivery worker replicas (a CPU rule adds them).')
@minValue(1)
param workerMaxReplicas int = 3

@description('Zep base URL (ZEP_API_URL); empty: turns are queued until a sink is configured.')
param zepApiUrl string = ''

@description('True when the vault holds a zep-api-key secret.')
param hasZepApiKey bool = false

@description('LOG_LEVEL of the service.')
@allowed([
  'debug'
  'info'
  'warning'
  'error'
])
param logLevel string = 'info'

@description('uvicorn worker processes per replica (WEB_CONCURRENCY).')
@minValue(1)
@maxValue(8)
param webConcurrency int = 1

@description('vCPU per replica.')
param cpu string = '0.5'

@description('Memory per replica.')
param memory string = '1Gi'

@minValue(0)
param minReplicas int = 1

@minValue(1)
param maxReplicas int = 1

@description('Concurrent HTTP requests per replica before the HTTP scale rule adds one.')
@minValue(1)
param concurrentRequests int = 50

param tags object = {}

var port = 8000
var workerPort = 8001
var memoryMountPath = '/data/memory'
var postgresQueue = memoryQueue == 'postgres'
// Workers deliver into Zep: without ZEP_API_URL there is nothing to run (turns stay queued).
var runWorkers = postgresQueue && !empty(zepApiUrl)
// SQLite has one writer: with the sqlite queue the app never runs more than one replica.
var effectiveMaxReplicas = (memoryQueue == 'sqlite') ? 1 : maxReplicas
var effectiveMinReplicas = min(minReplicas, effectiveMaxReplicas)

// Settings every deployment sets, whatever the modes.
var serviceEnv = [
  {
    name: 'APP_ENV'
    value: 'production'
  }
  {
    name: 'HOST'
    value: '0.0.0.0'
  }
  {
    name: 'PORT'
    value: string(port)
  }
  {
    name: 'WEB_CONCURRENCY'
    value: string(webConcurrency)
  }
  {
    name: 'LOG_LEVEL'
    value: logLevel
  }
  {
    name: 'LOG_FORMAT'
    value: 'json'
  }
  {
    name: 'SERVE_WEB'
    value: 'false'
  }
  {
    name: 'AZURE_OPENAI_ENDPOINTS'
    value: openAiEndpoints
  }
  {
    name: 'AZURE_OPENAI_DEPLOYMENT'
    value: openAiDeployment
  }
  {
    name: 'CORS_ALLOW_ORIGINS'
    value: corsAllowOrigins
  }
  {
    name: 'MEMORY_TOKEN_KEYS'
    secretRef: 'memory-token-keys'
  }
]

// How the service gets its Azure OpenAI credential, by openAiAuth.
var credentialEnv = {
  'key-vault': [
    {
      name: 'AZURE_OPENAI_AUTH'
      value: 'key-vault'
    }
    {
      name: 'KEY_VAULT_URL'
      value: keyVaultUri
    }
    {
      name: 'KEY_VAULT_SECRET_NAME'
      value: apiKeySecretName
    }
    {
      name: 'AZURE_CLIENT_ID'
      value: identityClientId
    }
  ]
  'api-key-secret-ref': [
    {
      name: 'AZURE_OPENAI_AUTH'
      value: 'api-key'
    }
    {
      name: 'AZURE_OPENAI_API_KEY'
      secretRef: 'azure-openai-api-key'
    }
  ]
  entra: [
    {
      name: 'AZURE_OPENAI_AUTH'
      value: 'entra'
    }
    {
      name: 'AZURE_CLIENT_ID'
      value: identityClientId
    }
  ]
}

// Azure AI Voice Live (WebRTC calls through the service), when voiceLiveEndpoint is set. Its
// credential follows openAiAuth: the same vault secret, the same key, or the same identity.
var voiceLiveSettingsEnv = [
  {
    name: 'AZURE_VOICELIVE_ENDPOINT'
    value: voiceLiveEndpoint
  }
  {
    name: 'AZURE_VOICELIVE_MODEL'
    value: voiceLiveModel
  }
  {
    name: 'AZURE_VOICELIVE_API_VERSION'
    value: voiceLiveApiVersion
  }
]
var voiceLiveCredentialEnv = {
  'key-vault': [
    {
      name: 'AZURE_VOICELIVE_AUTH'
      value: 'key-vault'
    }
    {
      name: 'AZURE_VOICELIVE_KEY_SECRET'
      value: voiceLiveKeySecretName
    }
  ]
  'api-key-secret-ref': [
    {
      name: 'AZURE_VOICELIVE_AUTH'
      value: 'api-key'
    }
    {
      name: 'AZURE_VOICELIVE_KEY'
      secretRef: 'voicelive-api-key'
    }
  ]
  entra: [
    {
      name: 'AZURE_VOICELIVE_AUTH'
      value: 'entra'
    }
  ]
}
var voiceLiveEnv = empty(voiceLiveEndpoint) ? [] : concat(voiceLiveSettingsEnv, voiceLiveCredentialEnv[openAiAuth])

// How callers prove who they are, by authMode.
var callerAuthEnv = {
  entra: [
    {
      name: 'AUTH_MODE'
      value: 'entra'
    }
    {
      name: 'ENTRA_TENANT_ID'
      value: entraTenantId
    }
    {
      name: 'ENTRA_AUDIENCE'
      value: entraAudience
    }
  ]
  easyauth: [
    {
      name: 'AUTH_MODE'
      value: 'easyauth'
    }
  ]
}

// Where accepted transcript turns are stored, by memoryQueue. PostgreSQL: Entra sign-in
// with the service identity (AZURE_CLIENT_ID), no password; the service scales out and the
// worker app delivers (MEMORY_WORKER=off in the service).
var postgresEnv = [
  {
    name: 'MEMORY_QUEUE'
    value: 'postgres'
  }
  {
    name: 'MEMORY_POSTGRES_HOST'
    value: postgresHost
  }
  {
    name: 'MEMORY_POSTGRES_DB'
    value: postgresDatabase
  }
  {
    name: 'MEMORY_POSTGRES_USER'
    value: postgresUser
  }
  {
    name: 'MEMORY_POSTGRES_AUTH'
    value: 'entra'
  }
]
var sqliteEnv = [
  {
    name: 'MEMORY_QUEUE'
    value: 'sqlite'
  }
  {
    name: 'MEMORY_SQLITE_PATH'
    value: '${memoryMountPath}/memory-queue.sqlite3'
  }
]
var identityEnv = [
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
]
var serviceWorkerOffEnv = [
  {
    name: 'MEMORY_WORKER'
    value: 'off'
  }
]
// The credential modes key-vault and entra set AZURE_CLIENT_ID already.
var serviceIdentityEnv = (openAiAuth == 'api-key-secret-ref') ? identityEnv : []
var memoryEnv = {
  postgres: concat(postgresEnv, serviceIdentityEnv, serviceWorkerOffEnv)
  sqlite: sqliteEnv
}

var zepSettingsEnv = [
  {
    name: 'ZEP_API_URL'
    value: zepApiUrl
  }
  {
    name: 'ZEP_API_KEY'
    secretRef: 'zep-api-key'
  }
]
var zepEnv = empty(zepApiUrl) ? [] : zepSettingsEnv

// The worker app: the shared process settings on its own port, the queue, Zep.
var workerProcessEnv = [
  {
    name: 'APP_ENV'
    value: 'production'
  }
  {
    name: 'HOST'
    value: '0.0.0.0'
  }
  {
    name: 'PORT'
    value: string(workerPort)
  }
  {
    name: 'LOG_LEVEL'
    value: logLevel
  }
  {
    name: 'LOG_FORMAT'
    value: 'json'
  }
]
var workerEnv = concat(workerProcessEnv, postgresEnv, identityEnv, zepEnv)
var drainEnv = concat(workerProcessEnv, sqliteEnv, zepEnv)

// Container App secrets are Key Vault references resolved with the service identity.
var memorySecrets = [
  {
    name: 'memory-token-keys'
    keyVaultUrl: '${keyVaultUri}secrets/${memoryTokenKeysSecretName}'
    identity: identityId
  }
]
var apiKeySecrets = [
  {
    name: 'azure-openai-api-key'
    keyVaultUrl: '${keyVaultUri}secrets/${apiKeySecretName}'
    identity: identityId
  }
]
var credentialSecrets = (openAiAuth == 'api-key-secret-ref') ? apiKeySecrets : []
var voiceLiveKeySecrets = [
  {
    name: 'voicelive-api-key'
    keyVaultUrl: '${keyVaultUri}secrets/${voiceLiveKeySecretName}'
    identity: identityId
  }
]
var voiceLiveSecrets = ((openAiAuth == 'api-key-secret-ref') && !empty(voiceLiveEndpoint)) ? voiceLiveKeySecrets : []
var zepKeySecrets = [
  {
    name: 'zep-api-key'
    keyVaultUrl: '${keyVaultUri}secrets/zep-api-key'
    identity: identityId
  }
]
var zepSecrets = hasZepApiKey ? zepKeySecrets : []

// The SQLite queue's share, mounted by the sqlite service and by the drain worker.
var sqliteVolumes = [
  {
    name: 'memory-queue'
    storageType: 'AzureFile'
    storageName: 'memory-queue'
    // SQLite takes POSIX byte-range locks; SMB enforces them server-side, which SQLite
    // reports as "database is locked". nobrl keeps locks on the (single) client.
    mountOptions: 'uid=10001,gid=10001,dir_mode=0700,file_mode=0600,nobrl,mfsymlinks,cache=strict'
  }
]
var sqliteMounts = [
  {
    volumeName: 'memory-queue'
    mountPath: memoryMountPath
  }
]

var identityRegistries = [
  {
    server: registryServer
    identity: identityId
  }
]
var registries = empty(registryServer) ? [] : identityRegistries

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
  }
}

resource queueStorage 'Microsoft.App/managedEnvironments/storages@2024-03-01' = {
  parent: environment
  name: 'memory-queue'
  properties: {
    azureFile: {
      accountName: storageAccount.name
      accountKey: storageAccount.listKeys().keys[0].value
      shareName: shareName
      accessMode: 'ReadWrite'
    }
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: appName
  location: location
  tags: tags
  dependsOn: [
    queueStorage
  ]
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: port
        allowInsecure: false
        transport: 'auto'
      }
      registries: registries
      secrets: concat(memorySecrets, credentialSecrets, voiceLiveSecrets, zepSecrets)
    }
    template: {
      containers: [
        {
          name: 'engram-voice'
          image: image
          command: [
            'engram-voice'
          ]
          args: [
            'serve'
          ]
          env: concat(
            serviceEnv,
            credentialEnv[openAiAuth],
            voiceLiveEnv,
            callerAuthEnv[authMode],
            memoryEnv[memoryQueue],
            zepEnv
          )
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          probes: [
            {
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: port
              }
              periodSeconds: 3
              failureThreshold: 20
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: port
              }
              periodSeconds: 10
              timeoutSeconds: 3
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: port
              }
              periodSeconds: 10
              timeoutSeconds: 8
              failureThreshold: 3
            }
          ]
          volumeMounts: postgresQueue ? [] : sqliteMounts
        }
      ]
      volumes: postgresQueue ? [] : sqliteVolumes
      scale: {
        minReplicas: effectiveMinReplicas
        maxReplicas: effectiveMaxReplicas
        rules: [
          {
            name: 'http-concurrency'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequests)
              }
            }
          }
        ]
      }
    }
  }
}

// In easyauth mode Container Apps authentication validates Entra ID bearer tokens at the
// ingress and injects the X-MS-CLIENT-PRINCIPAL headers the service trusts.
resource easyAuth 'Microsoft.App/containerApps/authConfigs@2024-03-01' = if (authMode == 'easyauth') {
  parent: app
  name: 'current'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/healthz'
        '/readyz'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: easyAuthClientId
          openIdIssuer: 'https://login.microsoftonline.com/${entraTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: split(entraAudience, ',')
        }
      }
    }
  }
}

// PostgreSQL: the delivery workers as their own app, scaled on their own.
module workers 'workerapp.bicep' = if (runWorkers) {
  name: 'memory-workers'
  params: {
    location: location
    appName: '${appName}-worker'
    environmentId: environment.id
    identityId: identityId
    image: image
    registries: registries
    secrets: zepSecrets
    env: workerEnv
    port: workerPort
    minReplicas: workerMinReplicas
    maxReplicas: workerMaxReplicas
    tags: tags
  }
}

// Migration from SQLite: one worker delivers what is left in the old file, then goes.
module sqliteDrainWorker 'workerapp.bicep' = if (runWorkers && sqliteDrain) {
  name: 'memory-sqlite-drain'
  // After the service's new revision: the old one (in-process worker on the file) is on its way out.
  dependsOn: [
    queueStorage
    app
  ]
  params: {
    location: location
    appName: '${appName}-drain'
    environmentId: environment.id
    identityId: identityId
    image: image
    registries: registries
    secrets: zepSecrets
    env: drainEnv
    port: workerPort
    volumes: sqliteVolumes
    volumeMounts: sqliteMounts
    minReplicas: 1
    maxReplicas: 1
    tags: tags
  }
}

output name string = app.name
output workerName string = runWorkers ? '${appName}-worker' : ''
output fqdn string = app.properties.configuration.ingress.fqdn
output url string = 'https://${app.properties.configuration.ingress.fqdn}'
