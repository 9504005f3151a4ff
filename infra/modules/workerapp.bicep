// A memory delivery worker as its own Container App: `engram-voice worker` (no ingress),
// health on its own port, scaled on its own. Used for the PostgreSQL queue's workers and,
// during a migration, for the one-replica drain of the old SQLite file.

@description('Azure region of the app.')
param location string

@description('Container App name.')
param appName string

@description('Resource id of the Container Apps environment.')
param environmentId string

@description('Resource id of the identity the worker runs as (the service identity).')
param identityId string

@description('Container image (the service image: the worker is one of its commands).')
param image string

@description('Registries to pull the image from (as the service app has them).')
param registries array = []

@description('Container App secrets (Key Vault references) the env refers to.')
param secrets array = []

@description('Environment variables of the worker (names as in docs/configuration.md).')
param env array

@description('Port of the worker\'s /healthz, /status and /metrics (its PORT).')
param port int = 8001

@description('Volumes (the SQLite drain mounts the queue share); empty for PostgreSQL.')
param volumes array = []

@description('Mounts of those volumes into the container.')
param volumeMounts array = []

@minValue(0)
param minReplicas int = 1

@minValue(1)
param maxReplicas int = 1

@description('Average CPU utilisation (%) per replica above which a replica is added.')
@minValue(1)
@maxValue(100)
param cpuUtilization int = 60

@description('vCPU per replica.')
param cpu string = '0.25'

@description('Memory per replica.')
param memory string = '0.5Gi'

param tags object = {}

resource worker 'Microsoft.App/containerApps@2024-03-01' = {
  name: appName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: environmentId
    configuration: {
      activeRevisionsMode: 'Single'
      registries: registries
      secrets: secrets
    }
    template: {
      containers: [
        {
          name: 'engram-voice-worker'
          image: image
          command: [
            'engram-voice'
          ]
          args: [
            'worker'
          ]
          env: env
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
          ]
          volumeMounts: volumeMounts
        }
      ]
      // SIGTERM lets in-flight deliveries finish (up to 15 s) and gives the leases back.
      terminationGracePeriodSeconds: 30
      volumes: volumes
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'cpu'
            custom: {
              type: 'cpu'
              metadata: {
                type: 'Utilization'
                value: string(cpuUtilization)
              }
            }
          }
        ]
      }
    }
  }
}

output name string = worker.name
