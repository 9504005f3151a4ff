// Azure AI Services account with the gpt-realtime deployment. The custom subdomain gives the
// https://{name}.openai.azure.com endpoint the service calls and is required for Entra ID.

@description('Region of the account: one that serves gpt-realtime.')
@allowed([
  'eastus2'
  'swedencentral'
])
param location string

@description('Account name; also its custom subdomain (globally unique).')
param name string

@description('Name of the gpt-realtime deployment (AZURE_OPENAI_DEPLOYMENT).')
param deploymentName string = 'gpt-realtime'

@description('Model version of gpt-realtime.')
param modelVersion string = '2025-08-28'

@description('GlobalStandard capacity of the deployment (units of 1,000 tokens per minute).')
@minValue(1)
param capacity int = 10

@description('Disable key authentication (true when the service uses Entra ID only).')
param disableLocalAuth bool = false

@description('Principal id of the service identity (gets Cognitive Services OpenAI User).')
param appPrincipalId string

param tags object = {}

var cognitiveServicesOpenAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'AIServices'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: name
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: disableLocalAuth
  }
}

resource realtime 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: 'GlobalStandard'
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: 'gpt-realtime'
      version: modelVersion
    }
    versionUpgradeOption: 'NoAutoUpgrade'
  }
}

resource openAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, cognitiveServicesOpenAiUser)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      cognitiveServicesOpenAiUser
    )
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = account.name
output endpoint string = 'https://${name}.openai.azure.com'
output deploymentName string = realtime.name
