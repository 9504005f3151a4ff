#!/usr/bin/env bash
# Runs inside Azure as the deployment script of infra/modules/memorykeys.bicep (Azure CLI
# image, deployer identity): create the MEMORY_TOKEN_KEYS secret once, never replace it.
set -u
# A fresh role assignment can take minutes to reach Key Vault: retry for up to 10 minutes.
# Only a "SecretNotFound" answer creates the secret; any other failure (403 while the role
# propagates, throttling) waits and asks again, so an existing key is never replaced.
for attempt in $(seq 1 40); do
  if answer=$(az keyvault secret show --vault-name "$VAULT_NAME" --name "$SECRET_NAME" --query id -o tsv 2>&1); then
    echo "secret $SECRET_NAME exists: left unchanged"
    exit 0
  fi
  if echo "$answer" | grep -q SecretNotFound; then
    value="k1:$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    if az keyvault secret set --vault-name "$VAULT_NAME" --name "$SECRET_NAME" --value "$value" \
        --content-type "engram-voice MEMORY_TOKEN_KEYS" --output none; then
      echo "secret $SECRET_NAME created"
      exit 0
    fi
  fi
  echo "attempt $attempt: vault not ready yet, retrying"
  sleep 15
done
echo "could not read or create $SECRET_NAME in $VAULT_NAME" >&2
exit 1
