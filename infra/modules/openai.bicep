// Azure AI Services account with the gpt-realtime deployment. The custom subdomain gives the
// https://{name}.openai.azure.com endpoint the service calls and is required for Entra ID.
// The same account serves Azure AI Voice Live at https://{name}.services.ai.azure.com (its
// WebRTC control channel /voice-live/realtime/calls), with the same keys.

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

@description('True when the service opens Voice Live calls on this account: the region must serve Voice Live WebRTC.')
param voiceLive bool = false

@description('Keyless Voice Live (AZURE_VOICELIVE_AUTH=entra): grant the service identity Cognitive Services User and Foundry User on this account.')
param voiceLiveKeyless bool = false

param tags object = {}

var cognitiveServicesOpenAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
// Built-in role definition ids (the same in every tenant), from "Azure built-in roles for
// AI + machine learning" (learn.microsoft.com/azure/role-based-access-control/built-in-roles/ai-machine-learning):
// Cognitive Services User a97b65f3-24c7-4388-baec-2e87135dc908, and Foundry User (formerly
// "Azure AI User") 53ca6127-db72-4b80-b1b0-d745d6d5456d. Voice Live with an Entra token
// (scope https://ai.azure.com/.default) needs both.
var cognitiveServicesUser = 'a97b65f3-24c7-4388-baec-2e87135dc908'
var foundryUser = '53ca6127-db72-4b80-b1b0-d745d6d5456d'

// Regions where Voice Live serves WebRTC (/voice-live/realtime/calls): the union of the two
// published lists of the Voice Live WebRTC how-to (docs voice-live-webrtc.md, 2026).
var voiceLiveWebRtcRegions = [
  'australiaeast'
  'brazilsouth'
  'centralindia'
  'centralus'
  'eastus2'
  'italynorth'
  'japaneast'
  'japanwest'
  'koreacentral'
  'northcentralus'
  'southcentralus'
  'uksouth'
  'westus'
  'westus2'
]
var accountLocation = (voiceLive && !contains(voiceLiveWebRtcRegions, location)) ? fail('Azure AI Voice Live does not serve WebRTC calls in ${location}: deploy to eastus2 or set voiceLive=false') : location

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: accountLocation
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

resource voiceLiveCognitiveServicesUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (voiceLive && voiceLiveKeyless) {
  name: guid(account.id, appPrincipalId, cognitiveServicesUser)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      cognitiveServicesUser
    )
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource voiceLiveFoundryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (voiceLive && voiceLiveKeyless) {
  name: guid(account.id, appPrincipalId, foundryUser)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      foundryUser
    )
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = account.name
output endpoint string = 'https://${name}.openai.azure.com'
output deploymentName string = realtime.name
output voiceLiveEndpoint string = 'https://${name}.services.ai.azure.com'

