// Static Web App that hosts the web client (`npm run build:static` output, web/dist/static).
// Content is uploaded after deployment with the SWA deployment token (infra/README.md).

@description('Region of the Static Web App (the service exists in a few regions only).')
@allowed([
  'westus2'
  'centralus'
  'eastus2'
  'westeurope'
  'eastasia'
])
param location string

@description('Static Web App name.')
param name string

@description('Free or Standard.')
@allowed([
  'Free'
  'Standard'
])
param sku string = 'Free'

param tags object = {}

resource site 'Microsoft.Web/staticSites@2023-12-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    tier: sku
  }
  properties: {}
}

output name string = site.name
output defaultHostname string = site.properties.defaultHostname
