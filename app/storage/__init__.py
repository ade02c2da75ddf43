"""Object storage: the S3 adapter (s3), the SigV4 presigner (presign) and the signer that runs it (signer).

Import the submodules directly: the API process imports presign/signer only, never aiobotocore (s3).
"""
