// Azure Database for PostgreSQL Flexible Server for the memory queue (MEMORY_QUEUE=postgres).
// Microsoft Entra authentication only (password authentication disabled, so there is no
// password anywhere): the service's user-assigned managed identity is the server's Entra
// administrator, signs in with an access token as its password (MEMORY_POSTGRES_AUTH=entra)
// and creates the queue's tables itself at start-up (versioned migrations).

@description('Azure region of the server.')
param location string

@description('Server name (3-63 lowercase letters, digits and hyphens, globally unique).')
@minLength(3)
@maxLength(63)
param name string

@description('Database that holds the queue (MEMORY_POSTGRES_DB).')
param databaseName string = 'engram_voice'

@description('Compute size, e.g. Standard_B1ms (Burstable), Standard_D2ds_v5 (GeneralPurpose).')
param skuName string = 'Standard_B1ms'

@description('Compute tier of skuName.')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param tier string = 'Burstable'

@description('Storage in GiB (grows automatically when nearly full).')
@minValue(32)
param storageSizeGB int = 32

@description('PostgreSQL major version.')
@allowed([
  '15'
  '16'
])
param version string = '16'

@description('Zone-redundant high availability (a standby in another zone; not offered on Burstable).')
param highAvailability bool = false

@description('Days of point-in-time restore.')
@minValue(7)
@maxValue(35)
param backupRetentionDays int = 7

@description('Principal (object) id of the service identity: the server\'s Entra administrator.')
param appPrincipalId string

@description('Name of the service identity: its role name on the server (MEMORY_POSTGRES_USER).')
param appIdentityName string

@description('Tenant of the Entra administrator.')
param tenantId string = tenant().tenantId

param tags object = {}

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: tier
  }
  properties: {
    version: version
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: highAvailability ? 'ZoneRedundant' : 'Disabled'
    }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenantId
    }
    network: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

// Container Apps on the consumption plan have no fixed outbound address: allow connections
// from Azure (0.0.0.0 is Azure's "allow Azure services" rule). Only Entra tokens sign in.
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

// The server takes one configuration change at a time: the administrator comes last.
resource administrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: server
  name: appPrincipalId
  dependsOn: [
    allowAzure
    database
  ]
  properties: {
    principalType: 'ServicePrincipal'
    principalName: appIdentityName
    tenantId: tenantId
  }
}

output name string = server.name
output host string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
output user string = administrator.properties.principalName
