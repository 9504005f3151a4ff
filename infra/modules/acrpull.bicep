// Lets the service identity pull the image from an Azure Container Registry (AcrPull on the
// registry). Deployed in the registry's resource group; does nothing for a public image.

@description('Registry name; empty when the image is public.')
param registryName string

@description('Principal id of the service identity.')
param appPrincipalId string

var acrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var useRegistry = !empty(registryName)

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = if (useRegistry) {
  name: registryName
}

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useRegistry) {
  name: guid(resourceGroup().id, registryName, appPrincipalId, acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPull)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output loginServer string = useRegistry ? '${registryName}.${environment().suffixes.acrLoginServer}' : ''
