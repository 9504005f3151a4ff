// User-assigned managed identities: one for the service, one for the deployment script
// that creates the memory signing key (it alone may write secrets).

@description('Azure region of the identities.')
param location string

@description('Name of the service identity (the Container App runs as it).')
param appIdentityName string

@description('Name of the identity the deployment script runs as.')
param deployerIdentityName string

param tags object = {}

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: appIdentityName
  location: location
  tags: tags
}

resource deployerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: deployerIdentityName
  location: location
  tags: tags
}

output appIdentityId string = appIdentity.id
output appIdentityName string = appIdentity.name
output appClientId string = appIdentity.properties.clientId
output appPrincipalId string = appIdentity.properties.principalId
output deployerIdentityId string = deployerIdentity.id
output deployerPrincipalId string = deployerIdentity.properties.principalId
