// Log Analytics workspace: where the Container Apps environment sends console and system logs.

@description('Azure region of the workspace.')
param location string

@description('Workspace name.')
param name string

@description('Days logs are kept.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

param tags object = {}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

output id string = workspace.id
output name string = workspace.name
