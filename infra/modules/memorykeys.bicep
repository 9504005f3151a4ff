// Creates the `memory-token-keys` secret (MEMORY_TOKEN_KEYS: `<key id>:<64 hex chars>`) once,
// inside Azure, if the vault does not have it yet. Re-deploying never replaces it: memory
// tokens and conversation ids signed with it stay valid. The value never appears in a
// parameter, an output or the deployment history. Rotation is an operator step
// (infra/README.md).

@description('Azure region of the deployment script.')
param location string

@description('Vault that holds the secret.')
param vaultName string

@description('Resource id of the identity the script runs as (Key Vault Secrets Officer).')
param deployerIdentityId string

@description('Role assignment the script waits for (passed so the script runs after it).')
param writerAssignmentId string

@description('Secret name (the Container App reads it as MEMORY_TOKEN_KEYS).')
param secretName string = 'memory-token-keys'

@description('Changes on every deployment so the idempotent script always runs.')
param runTag string = utcNow()

param tags object = {}

resource createKeys 'Microsoft.Resources/deploymentScripts@2023-08-01' = {
  name: 'create-memory-token-keys'
  location: location
  tags: tags
  kind: 'AzureCLI'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${deployerIdentityId}': {}
    }
  }
  properties: {
    azCliVersion: '2.63.0'
    forceUpdateTag: runTag
    timeout: 'PT15M'
    retentionInterval: 'PT1H'
    cleanupPreference: 'OnSuccess'
    environmentVariables: [
      {
        name: 'VAULT_NAME'
        value: vaultName
      }
      {
        name: 'SECRET_NAME'
        value: secretName
      }
      {
        name: 'WRITER_ASSIGNMENT'
        value: writerAssignmentId
      }
    ]
    scriptContent: loadTextContent('../scripts/create-memory-token-keys.sh')
  }
}

output secretName string = secretName
